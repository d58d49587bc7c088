"""`scb finetune`: train or fine-tune a model on a task's training split with transformers' trainer.

`model.kind` picks the objective. `seq2seq` (T5 from scratch): the source is the encoder's input and the
loss is on the target. `causal` (Llama from scratch): each training row is one text, prefix + source +
target and then EOS, and the loss is on every token of it, a plain language-modelling objective (so the
training file may hold whole few-shot documents).
"""

from __future__ import annotations

import json
import re
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import torch

from ..files import write_file
from ..models.loading import ModelLoadError, check_tokenizer, damaged_weights, load_tokenizer, model_load_error
from ..settings import ConfigError
from ..tasks import prompts
from ..tasks.data import DataError, check_local_task, select_indices, task_indices, text_field
from ..tasks.examples import render_prompt
from ..tasks.metrics import ANSWER_METRICS, corpus_score
from ..tasks.prompts import cut_at_stop, get_field
from ..tasks.settings import TaskConfig, looks_like_path
from ..tasks.sources import task_rows
from .settings import FinetuneConfig

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # the trainer's checkpoint folders

# What a checkpoint of the trainer needs for a faithful resume, besides the model weights.
CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


def _build_model(config: FinetuneConfig, tokenizer):
    """The model to train: `model.pretrained` loaded, or a T5 (seq2seq) or Llama (causal) built from
    `model.architecture` with the tokenizer's vocabulary and special tokens."""
    import transformers
    from safetensors import SafetensorError

    causal = config.kind == "causal"
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModelForSeq2SeqLM
    if config.pretrained:
        try:
            return auto.from_pretrained(config.pretrained)
        except (OSError, ValueError, SafetensorError) as exc:
            raise model_load_error(config.pretrained, "pretrained model", exc) from None
    name, config_class, model_class = (("Llama", transformers.LlamaConfig, transformers.LlamaForCausalLM) if causal
                                       else ("T5", transformers.T5Config, transformers.T5ForConditionalGeneration))
    special = ({"bos_token_id": tokenizer.bos_token_id} if causal
               else {"decoder_start_token_id": tokenizer.pad_token_id})
    try:
        model_config = config_class(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id, **special, **config.architecture)
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(config.file, "model.architecture", " ".join(str(exc).split())) from None
    torch.manual_seed(config.seed)
    try:
        return model_class(model_config)
    except (ValueError, RuntimeError, ZeroDivisionError, KeyError, TypeError) as exc:
        raise ConfigError(config.file, "model.architecture", f"cannot build a {name} model from it: "
                          f"{' '.join(str(exc).split())}") from None


def _closes_with_eos(tokenizer) -> bool:
    """Whether the tokenizer ends every text with EOS itself (ByT5, T5), as Llama-style tokenizers do not."""
    ids = tokenizer("a").input_ids
    return len(ids) > 0 and ids[-1] == tokenizer.eos_token_id


def lm_ids(tokenizer, text: str, max_tokens: int) -> list[int]:
    """A causal training sequence: the text's ids (with BOS where the tokenizer adds one), then one EOS,
    `max_tokens` ids at most."""
    if _closes_with_eos(tokenizer):
        return list(tokenizer(text, truncation=True, max_length=max_tokens).input_ids)
    return list(tokenizer(text, truncation=True, max_length=max_tokens - 1).input_ids) + [tokenizer.eos_token_id]


def prompt_ids(tokenizer, text: str, max_tokens: int) -> list[int]:
    """A causal model's prompt, encoded as `scb run` encodes a decoder-only prompt (`prompts.prompt_ids`):
    without a closing EOS (a prompt continues), cut from the left to `max_tokens`."""
    return prompts.prompt_ids(tokenizer, prompts.PromptParts("", (), text), prompts.PromptFormat(max_tokens), True)[0]


def check_resources(config: FinetuneConfig) -> None:
    """The checks that need no model or dataset loaded: local data files (the training file and a local
    evaluation file) exist and hold the configured fields, local model and tokenizer paths exist, and the
    output is a folder."""
    file = config.file
    if config.task.is_local:
        local = [("task.dataset", config.task)]
        if config.eval_split:
            local.append(("training.eval_split", eval_task(config.task, config.eval_split)))
        for key, task in local:
            check_local_task(file, key, task)
    for key, name in (("model.pretrained", config.pretrained), ("model.tokenizer", config.tokenizer)):
        if name and looks_like_path(name) and not Path(name).expanduser().exists():
            raise ConfigError(file, key, f"local path not found: {name}")
    out = Path(config.output).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(file, "output", f"{out} is a file, not a folder")
    ours = (out / "training.json").is_file() or (out / "checkpoints").is_dir()
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise ConfigError(file, "output", f"{out} exists and is not an output of `scb finetune` (no training.json or "
                          "checkpoints/); choose another output (nothing was written)")
    link = next((path for path in out.rglob("*") if path.is_symlink()), None) if out.is_dir() else None
    if link is not None:  # the trainer and save_pretrained would write through it
        raise ConfigError(file, "output", f"{link} is a link, which this suite never writes through; move it aside")


def checkpoints_by_step(checkpoints: Path) -> list[Path]:
    """The trainer's `checkpoint-<step>` folders, oldest first; it resumes from the last one."""
    if not checkpoints.is_dir():
        return []
    found = [p for p in checkpoints.iterdir() if _CHECKPOINT.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(_CHECKPOINT.match(p.name).group(1)))


def checkpoint_problem(folder: Path) -> str | None:
    """Why a trainer checkpoint cannot be resumed from (a missing or truncated file, as an interrupted save
    leaves), or None. Reads file headers and the small JSON files only."""
    for name in CHECKPOINT_FILES:
        if not (folder / name).is_file():
            return f"{name} is missing"
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        return "it holds no model weights"
    damaged = damaged_weights(folder)
    if damaged:
        return f"{damaged[0].name} is damaged: {damaged[1]}"
    for path in sorted(folder.iterdir()):
        if path.suffix == ".json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                return f"{path.name} is not valid JSON (truncated?)"
        elif path.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(path):  # torch.save writes zip files
            return f"{path.name} is truncated or not a file written by torch.save"
    return None


def resume_point(checkpoints: Path) -> Path | None:
    """The last checkpoint, checked before anything loads; ModelLoadError naming it when it is damaged.
    Nothing is deleted: the message says how to recover."""
    found = checkpoints_by_step(checkpoints)
    if not found:
        return None
    last = found[-1]
    problem = checkpoint_problem(last)
    if problem is None:
        return last
    recover = f"delete that folder to resume from {found[-2].name}" if len(found) > 1 else "delete that folder"
    raise ModelLoadError(f"the checkpoint {last} is damaged ({problem}), so training cannot resume from it; "
                         f"{recover}, or start over with --fresh")


def answer_options(task: TaskConfig) -> dict:
    """How the task's answer metrics extract and normalise answers (`metrics.corpus_score`'s keywords)."""
    if task.metric not in ANSWER_METRICS:
        return {}
    return {"answer_pattern": task.answer_pattern, "normalize": task.normalize, "answer_select": task.answer_select}


def eval_task(task: TaskConfig, eval_split: str) -> TaskConfig:
    """The evaluation data: another split of a hub dataset, or another file beside a local one."""
    return replace(task, dataset=eval_split) if task.is_local else replace(task, split=eval_split)


def _tokenized(task: TaskConfig, tokenizer, seed: int, max_target: int, causal: bool = False):
    rows = task_rows(task)
    if len(rows) == 0:
        raise DataError(f"dataset {task.dataset!r} has no rows")
    for key in task.fields_used():
        try:
            get_field(rows[0], key)
        except KeyError:
            raise DataError(f"dataset {task.dataset!r} has no field {key!r}; its fields: "
                            f"{', '.join(map(str, rows[0]))}") from None
    indices = task_indices(task, len(rows), seed)

    def encode(row, index):
        source = task.prefix + render_prompt(task, row, index)
        target = text_field(row, task, "target", index)
        if causal:
            ids = lm_ids(tokenizer, source + target, task.max_source_tokens + max_target)
            return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)}
        enc = tokenizer(source, truncation=True, max_length=task.max_source_tokens)
        enc["labels"] = tokenizer(text_target=target, truncation=True, max_length=max_target)["input_ids"]
        return dict(enc)

    if hasattr(rows, "select"):  # a datasets.Dataset
        rows = rows.select(indices)
        return rows.map(encode, with_indices=True, remove_columns=rows.column_names)
    # rows through task.process, or a plugin source's: encoded here, so Arrow never types the raw rows
    from datasets import Dataset

    return Dataset.from_list([encode(rows[i], n) for n, i in enumerate(indices)])


def evaluate(model, tokenizer, task: TaskConfig, sources: list[str], references: list[str],
             max_new_tokens: int, batch_size: int = 64) -> float:
    """Corpus score of greedy `generate()` outputs on the given sources."""
    model.eval()
    predictions = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(sources), batch_size):
            batch = tokenizer(sources[start:start + batch_size], return_tensors="pt", padding=True,
                              truncation=True, max_length=task.max_source_tokens).to(device)
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
            predictions += tokenizer.batch_decode(out, skip_special_tokens=True)
    return corpus_score(task.metric, predictions, references, **answer_options(task))


def evaluate_causal(model, tokenizer, task: TaskConfig, sources: list[str], references: list[str],
                    max_new_tokens: int, batch_size: int = 64) -> float:
    """Corpus score of a causal model's greedy continuations of the sources: the new tokens only, up to EOS
    or the first of the task's stop strings (`task.stop`)."""
    model.eval()
    predictions = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(sources), batch_size):
            batch = sources[start:start + batch_size]
            encoded = [prompt_ids(tokenizer, text, task.max_source_tokens) for text in batch]
            width = max(len(ids) for ids in encoded)
            # Padded on the left, so that every continuation starts at the same position.
            input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(ids)) + ids for ids in encoded])
            mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded])
            out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            predictions += [cut_at_stop(text, task.stop).strip() for text in texts]
    return corpus_score(task.metric, predictions, references, **answer_options(task))


def _training_arguments(config: FinetuneConfig, checkpoints: Path):
    """The trainer's arguments: the config's training section, checkpoints every `save_steps` into
    `checkpoints` (the last two kept), bf16 where asked for or (auto) where the GPU supports it."""
    from transformers import Seq2SeqTrainingArguments

    bf16 = config.bf16 == "true" or (config.bf16 == "auto" and torch.cuda.is_available()
                                     and torch.cuda.is_bf16_supported())
    return Seq2SeqTrainingArguments(
        output_dir=str(checkpoints),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        gradient_checkpointing=config.gradient_checkpointing,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=max(1, min(100, config.max_steps // 20)),
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        seed=config.seed,
        bf16=bf16,
        report_to=[],
        disable_tqdm=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def finetune(config: FinetuneConfig, fresh: bool = False) -> dict:
    """Train, save the model and tokenizer with `save_pretrained` to `config.output`; returns a summary."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Trainer

    check_resources(config)
    out = Path(config.output).expanduser()
    checkpoints = out / "checkpoints"
    resume_from = None if fresh else resume_point(checkpoints)
    tokenizer_name = config.tokenizer or config.pretrained
    tokenizer = load_tokenizer(tokenizer_name, "model.tokenizer")
    causal = config.kind == "causal"
    if causal and tokenizer.pad_token is None:  # Llama-style tokenizers: padding is masked out of the loss
        tokenizer.pad_token = tokenizer.eos_token
    train = _tokenized(config.task, tokenizer, config.seed, config.max_target_tokens, causal)
    if config.eval_split:  # read before training, so that a bad evaluation row costs no training
        task = eval_task(config.task, config.eval_split)
        rows = task_rows(task)
        indices = select_indices(len(rows), config.eval_examples, config.seed)
        sources = [config.task.prefix + render_prompt(task, rows[i], i) for i in indices]
        references = [text_field(rows[i], task, "target", i) for i in indices]
    model = _build_model(config, tokenizer)
    check_tokenizer(tokenizer, model, tokenizer_name, "model.tokenizer")
    args = _training_arguments(config, checkpoints)
    if causal:
        # The seq2seq collator without a model only pads: input ids with the pad token, labels with -100, so
        # that padding is out of the loss whatever the pad token is (an EOS used as padding stays learnt).
        trainer = Trainer(model=model, args=args, train_dataset=train,
                          data_collator=DataCollatorForSeq2Seq(tokenizer))
    else:
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=train,
                                 data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - start
    summary = {"name": config.name, "steps": config.max_steps, "train_seconds": round(seconds, 1),
               "parameters": sum(p.numel() for p in model.parameters()), "resumed": resume_from is not None}
    if config.eval_split:
        score = (evaluate_causal if causal else evaluate)(model, tokenizer, config.task, sources, references,
                                                          config.max_target_tokens)
        summary[f"eval_{config.task.metric}"] = round(score, 2)
    save_dtype = getattr(torch, config.save_dtype)
    model.to(save_dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_file(out / "training.json", json.dumps(summary, indent=2) + "\n")
    return summary
