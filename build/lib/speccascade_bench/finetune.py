"""`scb finetune`: train or fine-tune a seq2seq model on a task's training split with transformers' trainer."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from .config import FinetuneConfig, TaskConfig
from .data import get_field, load_rows, select_indices
from .metrics import corpus_score


def load_tokenizer(name: str):
    """`byt5` gives a byte-level tokenizer that needs no files; anything else is a hub name or path."""
    if name == "byt5":
        from transformers import ByT5Tokenizer

        return ByT5Tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name)


def _build_model(config: FinetuneConfig, tokenizer):
    from transformers import AutoModelForSeq2SeqLM, T5Config, T5ForConditionalGeneration

    if config.pretrained:
        return AutoModelForSeq2SeqLM.from_pretrained(config.pretrained)
    try:
        t5_config = T5Config(
            vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id, **config.architecture,
        )
    except TypeError as exc:
        raise ValueError(f"{config.file}: model.architecture: {exc}") from None
    torch.manual_seed(config.seed)
    return T5ForConditionalGeneration(t5_config)


def eval_task(task: TaskConfig, eval_split: str) -> TaskConfig:
    """The evaluation data: another split of a hub dataset, or another file beside a local one."""
    return replace(task, dataset=eval_split) if task.is_local else replace(task, split=eval_split)


def _tokenized(task: TaskConfig, tokenizer, limit: int | None, seed: int, max_target: int):
    rows = load_rows(task)
    rows = rows.select(select_indices(len(rows), limit, seed))

    def encode(row):
        source = task.prefix + str(get_field(row, task.source))
        target = str(get_field(row, task.target))
        enc = tokenizer(source, truncation=True, max_length=task.max_source_tokens)
        enc["labels"] = tokenizer(text_target=target, truncation=True, max_length=max_target)["input_ids"]
        return enc

    return rows.map(encode, remove_columns=rows.column_names)


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
    return corpus_score(task.metric, predictions, references)


def finetune(config: FinetuneConfig, fresh: bool = False) -> dict:
    """Train, save the model and tokenizer with `save_pretrained` to `config.output`; returns a summary."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    tokenizer = load_tokenizer(config.tokenizer or config.pretrained)
    model = _build_model(config, tokenizer)
    train = _tokenized(config.task, tokenizer, config.task.limit, config.seed, config.max_target_tokens)
    out = Path(config.output)
    checkpoints = out / "checkpoints"
    bf16 = config.bf16 == "true" or (config.bf16 == "auto" and torch.cuda.is_available()
                                     and torch.cuda.is_bf16_supported())
    args = Seq2SeqTrainingArguments(
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
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=train,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
    resume = not fresh and checkpoints.exists() and any(checkpoints.glob("checkpoint-*"))
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if resume else None)
    seconds = time.perf_counter() - start
    summary = {"name": config.name, "steps": config.max_steps, "train_seconds": round(seconds, 1),
               "parameters": sum(p.numel() for p in model.parameters()), "resumed": resume}
    if config.eval_split:
        rows = load_rows(eval_task(config.task, config.eval_split))
        rows = rows.select(select_indices(len(rows), config.eval_examples, config.seed))
        sources = [config.task.prefix + str(get_field(r, config.task.source)) for r in rows]
        references = [str(get_field(r, config.task.target)) for r in rows]
        score = evaluate(model, tokenizer, config.task, sources, references, config.max_target_tokens)
        summary[f"eval_{config.task.metric}"] = round(score, 2)
    save_dtype = getattr(torch, config.save_dtype)
    model.to(save_dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
