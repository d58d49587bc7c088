"""Quality metrics: per-example scores, corpus scores and a paired bootstrap, all on a 0-100 scale.

| metric            | per example (`example_score`)                   | corpus (`corpus_score`)                   |
|-------------------|-------------------------------------------------|-------------------------------------------|
| `bleu`            | sacrebleu sentence BLEU vs the first reference  | sacrebleu corpus BLEU (summed statistics) |
| `chrf`            | sacrebleu sentence chrF vs the first reference  | sacrebleu corpus chrF (summed statistics) |
| `rouge2`/`rougeL` | rouge-score F1, stemmed, vs the first reference | mean of the example scores                |
| `exact_match`     | 100 if the answer equals any gold, else 0       | mean of the example scores                |
| `f1`              | SQuAD token F1, best over the golds             | mean of the example scores                |
| `pass_at_1`       | needs the code sandbox, not computed here       | not here; `paired_bootstrap` takes scores |
| `lm_eval`         | lm-evaluation-harness's filter and metric       | mean of the example scores                |

Corpus BLEU and chrF are not means of sentence scores (`CORPUS_METRICS`); their bootstrap resamples
per-sentence sufficient statistics. Answer metrics normalise text the way the official scorers do
(`NORMALIZERS`) and may first extract the answer with a regular expression (`patterns.extract_answer`).
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from ..settings import suggest
from .patterns import AnswerPattern, PatternTimeout, clean_number, extract_answer

Score = Callable[[str, Sequence[str], "str | None", str], float]  # (prediction, references, pattern, normalize)


@dataclass(frozen=True)
class Metric:
    """A metric of the registry: how one example is scored, and how the corpus score follows from it."""

    name: str
    score: Score | None  # one example on a 0-100 scale; None: scored elsewhere (pass_at_1, in the sandbox)
    summed: bool = False  # the corpus score is sacrebleu's, from summed sentence statistics (else the mean)
    answer: bool = False  # takes `answer_pattern` and `normalize`
    sandbox: bool = False  # runs model-written code
    rows_scored: bool = True  # `scb report` averages the rows' stored scores (else it recomputes the corpus score)


REGISTRY: dict[str, Metric] = {}


def register_metric(name: str, *, answer: bool = False, summed: bool = False, sandbox: bool = False,
                    rows_scored: bool = True):
    """Register the decorated score function (prediction, references, pattern, normalize) -> 0-100 as the
    metric `name`: configs accept it as `task.metric` at once, and its corpus score is the mean."""

    def register(score: Score | None) -> Score | None:
        if name in REGISTRY:
            raise ValueError(f"the metric {name!r} is registered twice")
        REGISTRY[name] = Metric(name, score, summed, answer, sandbox, rows_scored)
        return score

    return register


class _Names(Collection):
    """The names of the registry's metrics that satisfy `keep`, read live (a metric registered later is in)."""

    def __init__(self, keep: Callable[[Metric], bool]):
        self.keep = keep

    def __iter__(self):
        return (name for name, metric in REGISTRY.items() if self.keep(metric))

    def __contains__(self, name: object) -> bool:
        return name in REGISTRY and self.keep(REGISTRY[name])

    def __len__(self) -> int:
        return sum(1 for _ in self)


METRICS = _Names(lambda metric: True)
CORPUS_METRICS = _Names(lambda metric: metric.summed)  # corpus score from summed per-sentence statistics
MEAN_METRICS = _Names(lambda metric: not metric.summed)  # corpus score = mean example score
ANSWER_METRICS = _Names(lambda metric: metric.answer)  # the metrics that take `answer_pattern` and `normalize`
PATTERN_METRICS = _Names(lambda metric: metric.answer or metric.sandbox)  # an answer_pattern's (pass_at_1: the code)
SCORED_METRICS = _Names(lambda metric: metric.rows_scored)  # their quality is the mean of the rows' `score`
CODE_METRICS = _Names(lambda metric: metric.sandbox)  # they run the prediction's code (`tasks.sandbox`)

_ARTICLES = re.compile(r"\b(a|an|the)\b")

_SQUAD_PUNCTUATION = frozenset(string.punctuation)

# TriviaQA also treats the curly single quotes, the acute accent and the backtick as punctuation.
_TRIVIAQA_PUNCTUATION = frozenset(string.punctuation + "\u2018\u2019\u00b4`")


def normalize_squad(text: str) -> str:
    """The SQuAD v2.0 official `normalize_answer`: lower-case, delete ASCII punctuation, replace the
    articles a/an/the by a space, collapse whitespace. "The Eiffel Tower!" -> "eiffel tower"."""
    text = "".join(ch for ch in text.lower() if ch not in _SQUAD_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalize_triviaqa(text: str) -> str:
    """TriviaQA's official `normalize_answer`: underscores become spaces, lower-case, punctuation (ASCII
    plus ‘ ’ ´) becomes a SPACE rather than vanishing ("don't" -> "don t"), articles, whitespace."""
    text = text.replace("_", " ").lower()
    text = "".join(" " if ch in _TRIVIAQA_PUNCTUATION else ch for ch in text)
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalize_none(text: str) -> str:
    """No normalisation beyond stripping surrounding whitespace."""
    return text.strip()


# lm-evaluation-harness's GSM8K exact match (`regexes_to_ignore`, then `ignore_case`), applied in this order.
_GSM8K_IGNORED = tuple(re.compile(pattern) for pattern in (",", r"\$", r"(?s).*#### ", r"\.$"))


def normalize_gsm8k(text: str) -> str:
    """lm-evaluation-harness's GSM8K exact match: delete every ",", every "$", everything up to and including the last
    "#### ", and a final ".", then lower-case (nothing stripped). A gold solution "... #### 1,000" -> "1000"."""
    for pattern in _GSM8K_IGNORED:
        text = pattern.sub("", text)
    return text.lower()


NORMALIZERS: dict[str, Callable[[str], str]] = {
    "squad": normalize_squad,
    "nq_open": normalize_squad,  # NQ-open's (DPR's) normalize_answer is SQuAD's; its golds are kept when empty
    "triviaqa": normalize_triviaqa,
    "none": normalize_none,
    "gsm8k": normalize_gsm8k,
}

WHOLE_GOLD = frozenset({"gsm8k"})  # normalisations that read the whole gold text, not a pattern's extract of it
NO_ANSWER = {"gsm8k": "[invalid]"}  # what a prediction the pattern does not match answers (default "")
def _normalizer(normalize: str) -> Callable[[str], str]:
    if normalize not in NORMALIZERS:
        raise ValueError(f"unknown normalize {normalize!r}{suggest(normalize, NORMALIZERS)}; "
                         f"choose from {', '.join(NORMALIZERS)}")
    return NORMALIZERS[normalize]


def _predicted_answer(prediction: str, pattern: str | None, normalize: str) -> str:
    """The normalised answer of a prediction; NO_ANSWER ("" by default) when the pattern does not match it, or
    takes too long."""
    normalizer = _normalizer(normalize)
    try:
        answer = extract_answer(prediction, pattern)
    except PatternTimeout:
        answer = None
    if answer is None:
        return NO_ANSWER.get(normalize, "")
    return normalizer(clean_number(answer) if pattern is not None and normalize not in WHOLE_GOLD else answer)


def _gold_answers(references: Sequence[str], pattern: str | None, normalizer: Callable[[str], str],
                  drop_empty: bool) -> list[str]:
    """The normalised gold answers. A reference the pattern does not match is kept whole (a pattern of None keeps
    every reference whole). With `drop_empty` (the SQuAD v2.0 script's rule, under its normalisation only), golds
    that normalise to "" are dropped; TriviaQA's and NQ-open's scripts keep them (an empty prediction then matches:
    NQ-open's exact match is the best over every answer). No gold at all means the only answer is ""."""
    golds = []
    for reference in references:
        answer = extract_answer(reference, pattern)
        answer = reference if answer is None else answer
        golds.append(normalizer(clean_number(answer) if pattern is not None else answer))
    if drop_empty:
        golds = [gold for gold in golds if gold]
    return golds or [""]


def _token_f1(predicted: str, gold: str, empty_match: bool = True) -> float:
    """Token F1 in [0, 1] of two normalised answers. When either is empty: SQuAD's script gives 1 if both are
    (`empty_match`), TriviaQA's 0 (no token in common)."""
    predicted_tokens, gold_tokens = predicted.split(), gold.split()
    if not predicted_tokens or not gold_tokens:
        return float(empty_match and predicted_tokens == gold_tokens)
    same = sum((Counter(predicted_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _answers(prediction: str, references: Sequence[str], pattern: str | None, normalize: str) -> tuple[str, list[str]]:
    """The normalised answer of a prediction and the normalised gold answers (see `example_score`). Under a
    WHOLE_GOLD normalisation (lm-eval's GSM8K) the pattern reads the prediction only, as lm-eval's filters do."""
    normalizer = _normalizer(normalize)
    gold_pattern = None if normalize in WHOLE_GOLD else pattern
    return (_predicted_answer(prediction, pattern, normalize),
            _gold_answers(references, gold_pattern, normalizer, drop_empty=normalize == "squad"))


def check_metric(metric: str, answer_pattern: str | None = None) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}{suggest(metric, METRICS)}; choose from {', '.join(METRICS)}")
    if answer_pattern is not None and metric not in ANSWER_METRICS:
        raise ValueError(f"an answer pattern applies to {' and '.join(ANSWER_METRICS)}, not to {metric!r}")


def reference_list(references: str | Sequence[str]) -> Sequence[str]:
    """One example's references; a bare string is one reference."""
    return [references] if isinstance(references, str) else references


@functools.lru_cache(maxsize=2)
def _rouge_scorer(metric: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([metric], use_stemmer=True)


def example_score(metric: str, prediction: str, references: str | Sequence[str], answer_pattern: str | None = None,
                  normalize: str = "squad", answer_select: str = "first") -> float:
    """One example's score on a 0-100 scale, by the registered metric's score function.

    bleu/chrf/rouge2/rougeL score against `references[0]`. exact_match and f1 extract the answer with
    `answer_pattern` (a prediction it does not match answers ""), apply `clean_number` when a pattern is
    given, normalise with `NORMALIZERS[normalize]`, and take the best over the references (aliases); an
    empty reference list means the question is unanswerable and only an empty answer is right. For GSM8K
    use normalize="none": the SQuAD normaliser deletes "-" and ".", so "-3" would equal "3".
    """
    check_metric(metric, answer_pattern)
    spec = REGISTRY[metric]
    if spec.score is None:
        raise ValueError(f"{metric} needs the generated code run in the sandbox; it is not computed in metrics")
    references = reference_list(references)
    if not spec.answer and not references:
        raise ValueError(f"{metric} needs a reference")
    pattern = None if answer_pattern is None else AnswerPattern(answer_pattern, answer_select)
    return spec.score(prediction, references, pattern, normalize)


@register_metric("bleu", summed=True, rows_scored=False)
def _bleu(prediction: str, references: Sequence[str], pattern: str | None, normalize: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(prediction, [references[0]]).score)


@register_metric("chrf", summed=True, rows_scored=False)
def _chrf(prediction: str, references: Sequence[str], pattern: str | None, normalize: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_chrf(prediction, [references[0]]).score)


@register_metric("rouge2", rows_scored=False)
def _rouge2(prediction: str, references: Sequence[str], pattern: str | None, normalize: str) -> float:
    return 100.0 * _rouge_scorer("rouge2").score(references[0], prediction)["rouge2"].fmeasure


@register_metric("rougeL", rows_scored=False)
def _rouge_l(prediction: str, references: Sequence[str], pattern: str | None, normalize: str) -> float:
    return 100.0 * _rouge_scorer("rougeL").score(references[0], prediction)["rougeL"].fmeasure


@register_metric("exact_match", answer=True)
def _exact_match(prediction: str, references: Sequence[str], pattern: str | None, normalize: str) -> float:
    predicted, golds = _answers(prediction, references, pattern, normalize)
    return 100.0 * (predicted in golds)


@register_metric("f1", answer=True)
def _f1(prediction: str, references: Sequence[str], pattern: str | None, normalize: str) -> float:
    predicted, golds = _answers(prediction, references, pattern, normalize)
    if not references:  # unanswerable: only an empty answer is right, under every normalisation
        return 100.0 * (predicted == "")
    return 100.0 * max(_token_f1(predicted, gold, empty_match=normalize != "triviaqa") for gold in golds)


register_metric("pass_at_1", sandbox=True)(None)  # scored by running the code against its tests (tasks.scoring)
register_metric("lm_eval")(None)  # scored by lm-evaluation-harness's own filters and metric (tasks.harness)


def sacrebleu_metric(metric: str):
    """sacrebleu's metric object with the settings of `sacrebleu.corpus_bleu` / `corpus_chrf`."""
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU() if metric == "bleu" else CHRF()


def corpus_score(metric: str, predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], *,
                 answer_pattern: str | None = None, normalize: str = "squad", answer_select: str = "first") -> float:
    """The corpus score on a 0-100 scale; NaN for no examples. Each reference is a string or, for the
    answer metrics, a list of accepted answers. BLEU and chrF are sacrebleu's corpus scores (against the
    first reference), not means of sentence scores; every other metric is the mean of `example_score`."""
    check_metric(metric, answer_pattern)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return float("nan")
    if metric in CORPUS_METRICS:
        first = [reference_list(refs)[0] for refs in references]
        return float(sacrebleu_metric(metric).corpus_score(list(predictions), [first]).score)
    total = sum(example_score(metric, pred, refs, answer_pattern, normalize, answer_select)
                for pred, refs in zip(predictions, references, strict=True))
    return total / len(predictions)
