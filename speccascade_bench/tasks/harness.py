"""Tasks of lm-evaluation-harness's registry (`task.lm_eval: NAME`): the prompts, the shots (lm-eval's sampler and
seed), the stop sequences, the filters and the metrics all come from lm-eval, so that scores compare with the
numbers the field reports.

At config reading, `check` reads the task's registered config without running its code: a group or tag, a
log-likelihood task, a task that runs model-written code outside a sandbox and unknown filters or metrics are
refused there, and the task's `dataset`, `split`, `stop` and `metric` are filled in. Before any model loads,
`HarnessTask` builds the task as lm-eval's evaluator does (its dataset from the hub, or the `data_files` given,
in the task's schema), sets its shot count and few-shot seed, and builds its requests: one example per document,
in lm-eval's order, the first `limit` of them (lm-eval's `--limit`). A prediction is scored as the evaluator
scores it: through each filter ensemble, then the task's `process_results`; the row keeps every filter's
metrics, and its `score` is the chosen filter's chosen metric on a 0-100 scale.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

from ..settings import suggest
from .data import DataError, Example, check_data_file, one_line
from .prompts import PromptParts
from .settings import BUILDERS, TaskConfig
from .targets import references_of, target_problem

log = logging.getLogger(__name__)

GENERATE = "generate_until"

# lm-eval metrics aggregated over the corpus, and the metric of the suite that computes the same score from the
# rows' predictions and references (sacrebleu's corpus BLEU and chrF with their default settings).
CORPUS = {"bleu": "bleu", "chrf": "chrf"}
REFUSED_SCORES = {"ter": "it is an error rate (lower is better, unbounded); score with bleu or chrf"}
SPLIT_KEYS = ("test_split", "validation_split", "training_split", "fewshot_split")


class HarnessError(ValueError):
    """An lm-eval task that cannot be used as configured; `key` is the task key at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("lm_eval")
    except PackageNotFoundError:
        raise HarnessError("lm_eval", "lm-evaluation-harness is not installed: pip install lm-eval==0.4.13") \
            from None


@functools.lru_cache(maxsize=1)
def _manager():
    """lm-eval's task index (every registered config, read once per process: about 10 s)."""
    version()
    for name in ("lm_eval", "lm-eval"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from lm_eval.tasks import TaskManager

    return TaskManager()


@dataclass(frozen=True)
class Registered:
    """What a task's registered config says, read without running its code."""

    name: str
    python: bool  # a task class of its own (its dataset, prompts and metrics are code)
    config: dict

    @property
    def filters(self) -> tuple[str, ...]:
        return tuple(str(f.get("name")) for f in self.config.get("filter_list") or []) or ("none",)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(Path(str(m["metric"])).suffix.lstrip(".") if "/" in str(m["metric"]) else str(m["metric"])
                     for m in self.config.get("metric_list") or [])

    @property
    def eval_split(self) -> str | None:
        return self.config.get("test_split") or self.config.get("validation_split")


@functools.lru_cache(maxsize=32)
def registered(name: str) -> Registered:
    """The registered config of lm-eval's task `name`; a HarnessError for an unknown name, a group or a tag."""
    manager = _manager()
    entry = manager.task_index.get(name)
    if entry is None:
        raise HarnessError("lm_eval", f"lm-evaluation-harness {version()} has no task {name!r}"
                           f"{suggest(name, manager.all_subtasks)}")
    kind = entry.kind.name
    if kind in ("GROUP", "TAG"):
        raise HarnessError("lm_eval", f"{name!r} is a {kind.lower()} of lm-eval tasks; name one of its tasks")
    if entry.yaml_path is not None:
        from lm_eval.tasks._yaml_loader import load_yaml

        config = load_yaml(entry.yaml_path, resolve_func=False)
    else:
        config = dict(entry.cfg or {})
    return Registered(name, kind == "PY_TASK" or "class" in config, config)


def config_file(name: str) -> Path | None:
    """The YAML config of lm-eval's task `name` (None for a task class of its own)."""
    path = getattr(_manager().task_index.get(name), "yaml_path", None)
    return Path(path) if path else None


def check(task: TaskConfig) -> TaskConfig:
    """An lm-eval task checked against its registered config, with `dataset`, `subset`, `split`, `stop` and
    `metric` filled in from it (the config's own keys for these are refused by the reader). HarnessError names
    the key at fault."""
    spec = registered(task.lm_eval)
    config = spec.config
    if config.get("unsafe_code"):
        raise HarnessError("lm_eval", f"lm-eval scores {task.lm_eval!r} by running model-written code outside any "
                           "sandbox; the suite runs such code only in its own sandbox (metric pass_at_1, e.g. "
                           "configs/llm/mbpp.yaml)")
    output = config.get("output_type", GENERATE)
    if output != GENERATE:
        raise HarnessError("lm_eval", f"lm-eval's {task.lm_eval!r} is a {output} task, scored by the log-likelihood "
                           f"of given answers; only generation tasks ({GENERATE}) are decoded")
    if int(config.get("repeats") or 1) != 1:
        raise HarnessError("lm_eval", f"lm-eval's {task.lm_eval!r} samples {config['repeats']} outputs per "
                           "document; the suite decodes one")
    if task.filter is not None and task.filter not in spec.filters:
        raise HarnessError("filter", f"{task.lm_eval!r} has no filter {task.filter!r}; its filters: "
                           f"{', '.join(spec.filters)}")
    score = task.score or (spec.metrics[0] if spec.metrics else None)
    if spec.metrics and score not in spec.metrics:
        raise HarnessError("score", f"{task.lm_eval!r} has no metric {score!r}; its metrics: {', '.join(spec.metrics)}")
    if score in REFUSED_SCORES:
        raise HarnessError("score", f"{score} cannot be the score: {REFUSED_SCORES[score]}")
    dataset, subset, split = config.get("dataset_path"), config.get("dataset_name"), spec.eval_split
    if spec.python:
        dataset, subset, split = _python_dataset(spec)
    if task.data_files is not None:
        dataset, subset = _check_files(task, spec), None
    return replace(task, dataset=dataset or f"lm-eval:{task.lm_eval}", subset=subset, split=split or "test",
                   filter=task.filter or spec.filters[0], score=score, metric=CORPUS.get(score, "lm_eval"),
                   stop=_until(config.get("generation_kwargs")))  # a Python task's come with each request


def _python_dataset(spec: Registered) -> tuple[str | None, str | None, str | None]:
    """A task class's hub dataset, subset and evaluated split, as the class declares them (its module imported)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = _manager().task_index[spec.name]
    try:
        cls = (load_yaml(entry.yaml_path, resolve_func=True) if entry.yaml_path else {}).get("class")
    except Exception as exc:  # the class's module needs a package that is not installed
        raise HarnessError("lm_eval", f"lm-eval's {spec.name!r} cannot be loaded: {type(exc).__name__}: "
                           f"{one_line(exc)}") from None
    if not isinstance(cls, type):
        return None, None, None
    try:  # the classes answer these without their data
        split = "test" if cls.has_test_docs(None) else "validation" if cls.has_validation_docs(None) else None
    except Exception:  # a class whose answer reads its data: the split is known once it is built
        split = None
    return getattr(cls, "DATASET_PATH", None), getattr(cls, "DATASET_NAME", None), split


def _until(generation_kwargs: dict | None) -> tuple[str, ...]:
    """The non-empty stop sequences of lm-eval's generation settings (its config's, or a request's)."""
    until = (generation_kwargs or {}).get("until") or ()
    return tuple(s for s in ([until] if isinstance(until, str) else until) if s)


def _check_files(task: TaskConfig, spec: Registered) -> str:
    """Local data files in place of the task's hub dataset: one per split the task reads; returns the evaluated
    split's file."""
    if spec.python:
        raise HarnessError("data_files", f"{task.lm_eval!r} is a task class of its own that loads its dataset itself; "
                           "local files apply to tasks defined by a YAML config")
    files = task.data_files
    splits = {spec.config[key] for key in SPLIT_KEYS if spec.config.get(key)}
    builders = set()
    for split, path in files.items():
        if not isinstance(split, str) or split not in splits:
            raise HarnessError("data_files", f"{task.lm_eval!r} reads the splits {', '.join(sorted(splits))}, "
                               f"not {split!r}")
        if not isinstance(path, str) or not path.strip():
            raise HarnessError("data_files", f"the file of split {split!r} must be a path, got {path!r}")
        file = Path(path).expanduser()
        if not file.is_file():
            raise HarnessError("data_files", f"the file of split {split!r} is not a file: {path}")
        builder = BUILDERS.get(file.suffix.lower())
        if builder is None:
            raise HarnessError("data_files", f"{path}: unsupported file type; use {', '.join(BUILDERS)}")
        try:
            check_data_file(file, task)  # before lm-eval and `datasets` read it
        except DataError as exc:
            raise HarnessError("data_files", str(exc)) from None
        builders.add(builder)
    if len(builders) > 1:
        raise HarnessError("data_files", "give every split's file in one format (JSON lines, CSV or parquet)")
    if spec.eval_split not in files:
        raise HarnessError("data_files", f"has no file for {spec.eval_split!r}, the split lm-eval evaluates")
    shots = spec.config.get("fewshot_split") or spec.config.get("training_split") or spec.config.get(
        "validation_split")
    wanted = task.num_fewshot if task.num_fewshot is not None else int(spec.config.get("num_fewshot") or 0)
    if wanted and shots and shots not in files and not (spec.config.get("fewshot_config") or {}).get("samples"):
        raise HarnessError("data_files", f"has no file for {shots!r}, the split lm-eval draws the shots from")
    if wanted and shots and shots != spec.eval_split and shots in files and \
            Path(files[shots]).expanduser().resolve() == Path(files[spec.eval_split]).expanduser().resolve():
        raise HarnessError("data_files", f"gives {shots!r}, the split of the shots, the same file as the evaluated "
                           f"split {spec.eval_split!r}: lm-eval would draw documents as their own shots")
    return str(files[spec.eval_split])


class HarnessTask:
    """An lm-eval task built as lm-eval's evaluator builds it, for the examples and the scores of one run."""

    def __init__(self, task: TaskConfig):
        spec = registered(task.lm_eval)
        try:
            built = _manager().load([_local_config(task)] if task.data_files else [task.lm_eval])["tasks"]
        except Exception as exc:  # lm-eval and datasets raise many types for a dataset they cannot load
            raise DataError(_load_message(task, exc), "lm_eval") from None
        self.task, self.spec, self.lm = task, spec, next(iter(built.values()))
        if task.num_fewshot is not None:
            self.lm.set_config(key="num_fewshot", value=task.num_fewshot)
        elif self.lm.get_config("num_fewshot") is None:
            self.lm.set_config(key="num_fewshot", value=0)
        self.lm.set_fewshot_seed(seed=task.fewshot_seed)
        self.num_fewshot = int(self.lm.get_config("num_fewshot") or 0)
        self._filters = {ensemble.name: ensemble for ensemble in getattr(self.lm, "_filters", [])}

    def examples(self, limit: int | None = None, tokenizer=None) -> list[Example]:
        """One example per document, in lm-eval's order, the first `limit` (all when None). The sampler is seeded
        anew for each call: its draws run on from document to document, as lm-eval's evaluator makes them. A chat
        task's prompts are rendered by `tokenizer`'s chat template as lm-eval's `--apply_chat_template` renders
        them (`chat_renderer`), with `system` as its `--system_instruction`."""
        task = self.task
        if task.chat and tokenizer is None:
            raise ValueError("a chat task's prompts need the tokenizer whose chat template renders them")
        self.lm.set_fewshot_seed(seed=task.fewshot_seed)
        chat = {"system_instruction": task.system, "apply_chat_template": True, "chat_template": chat_renderer(
            tokenizer), "fewshot_as_multiturn": task.fewshot_as_multiturn} if task.chat else {}
        try:
            self.lm.build_all_requests(limit=limit, rank=0, world_size=1, **chat)
        except Exception as exc:  # a document the task's own code (or the chat template) cannot render
            # (a template that refuses the system turn was given the turns without it: the error is the turns')
            from jinja2.exceptions import TemplateError  # a template's own `raise_exception` raises one too

            key = "chat" if isinstance(exc, TemplateError) else "lm_eval"
            raise DataError(f"lm-eval could not build the requests of {task.lm_eval!r}: "
                            f"{type(exc).__name__}: {one_line(exc)}", key) from None
        by_doc: dict[int, list] = {}
        for instance in self.lm.instances:
            by_doc.setdefault(instance.doc_id, []).append(instance)
        examples = []
        for doc_id in sorted(by_doc):
            instances = by_doc[doc_id]
            kinds = {instance.request_type for instance in instances}
            if kinds != {GENERATE} or len(instances) != 1:
                raise DataError(f"lm-eval's {self.task.lm_eval!r} asks {len(instances)} requests of "
                                f"{', '.join(sorted(kinds))} per document; only one {GENERATE} request is decoded",
                                "lm_eval")
            instance = instances[0]
            context, gen_kwargs = instance.args[0], instance.args[1]
            target = self.lm.doc_to_target(instance.doc)
            problem = target_problem(target)
            if problem:  # lm-eval's own scoring would fail on it, after every model has decoded it
                raise DataError(f"document {doc_id} of {task.lm_eval!r}: its target {problem}; lm-eval cannot score "
                                "it (fix or drop the document)", "lm_eval")
            references = references_of(target)
            examples.append(Example(doc_id, context, references[0] if references else "", references,
                                    PromptParts("", (), context), doc=instance.doc,
                                    stop=_until(gen_kwargs),
                                    max_new_tokens=gen_kwargs.get("max_gen_toks"), fewshot=self.num_fewshot))
        return examples

    def metrics(self, example: Example, prediction: str) -> dict[str, dict]:
        """lm-eval's per-sample metrics of a prediction, per filter, as its evaluator computes them."""
        from lm_eval.api.instance import Instance

        results = {}
        for name, ensemble in (self._filters or {"none": None}).items():
            instance = Instance(GENERATE, example.doc, (example.source, {}), 0,
                                (self.task.lm_eval, example.example_id, 1))
            instance.resps = [prediction]
            if ensemble is None:
                instance.filtered_resps[name] = prediction
            else:
                ensemble.apply([instance])
            values = self.lm.process_results(example.doc, [instance.filtered_resps[name]])
            results[name] = {metric: _plain(value) for metric, value in values.items()}
        return results

    def score(self, example: Example, prediction: str) -> tuple[float, dict[str, dict]]:
        """The row's score (0-100: the chosen filter's chosen metric; for a corpus metric, the suite's sentence
        score of the filtered prediction) and every per-sample metric."""
        metrics = self.metrics(example, prediction)
        chosen = metrics[self.task.filter]
        if self.task.score not in chosen:
            raise DataError(f"lm-eval's {self.task.lm_eval!r} gave the metrics {', '.join(chosen)}, not "
                            f"{self.task.score!r} (task.score)", "score")
        value = chosen[self.task.score]
        if self.task.metric in CORPUS.values():
            from .metrics import example_score

            return example_score(self.task.metric, prediction, example.references), metrics
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not 0 <= value <= 1:
            raise DataError(f"lm-eval's {self.task.score!r} of {self.task.lm_eval!r} is {value!r}, not a per-sample "
                            "number from 0 to 1 that a mean aggregates; choose another task.score", "score")
        return 100.0 * float(value), metrics


def chat_renderer(tokenizer):
    """lm-eval's `hf` model's `apply_chat_template`: the tokenizer's chat template over the turns, and where the
    template refuses a system turn (Gemma 2's does), over the turns without it, as lm-eval does (said once)."""
    import jinja2

    def render(history: list[dict], add_generation_prompt: bool = True) -> str:
        settings = {"tokenize": False, "add_generation_prompt": add_generation_prompt,
                    "continue_final_message": not add_generation_prompt}
        try:
            return tokenizer.apply_chat_template(history, **settings)
        except jinja2.exceptions.TemplateError as exc:
            if not any(turn["role"] == "system" for turn in history):
                raise
            if not render.warned:
                log.warning("the chat template refused a system turn (%s); as lm-eval does, the prompts leave it out",
                            one_line(exc))
                render.warned = True
            return tokenizer.apply_chat_template([turn for turn in history if turn["role"] != "system"], **settings)

    render.warned = False
    return render


def _local_config(task: TaskConfig) -> dict:
    """The task's registered config, its functions resolved, reading `data_files` instead of its hub dataset
    (lm-eval builds a config given as a mapping from that mapping alone). A split without a file is no split of the
    task (`_check_files` refuses a missing one the task needs): lm-eval reads its training split for a sampler even
    at zero shots."""
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = _manager().task_index[task.lm_eval]
    config = load_yaml(entry.yaml_path, resolve_func=True)
    builder = BUILDERS[Path(next(iter(task.data_files.values()))).suffix.lower()]
    files = {split: str(Path(path).expanduser().resolve()) for split, path in task.data_files.items()}
    absent = {key: None for key in SPLIT_KEYS if config.get(key) and config[key] not in files}
    return {**config, **absent, "task": task.lm_eval, "dataset_path": builder, "dataset_name": None,
            "dataset_kwargs": {"data_files": files}}


def _plain(value):
    """A metric's per-sample value as JSON holds it (a corpus metric's item is a (reference, prediction) pair)."""
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, float):
        return float(value)  # numpy's float64 as a plain float
    if isinstance(value, bool | int | str) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))


def _load_message(task: TaskConfig, exc: Exception) -> str:
    where = "its local data_files" if task.data_files else f"the hub ({task.dataset})"
    return (f"lm-eval could not load the task {task.lm_eval!r} from {where}: {type(exc).__name__}: {one_line(exc)}"
            + ("" if task.data_files else "; without network access, give task.data_files in the task's schema"))


_BUILT: dict[str, HarnessTask] = {}


def harness_task(task: TaskConfig) -> HarnessTask:
    """The run's lm-eval task, built once per process (the examples and the scorer share it)."""
    from ..settings import plain

    key = json.dumps(plain(task), sort_keys=True, default=str)
    if key not in _BUILT:
        _BUILT.clear()
        _BUILT[key] = HarnessTask(task)
    return _BUILT[key]
