"""Corpus-level quality metrics: sacrebleu BLEU and chrF, rouge-score ROUGE-2 / ROUGE-L F1 (stemmed)."""

from __future__ import annotations

from collections.abc import Sequence


def corpus_score(metric: str, predictions: Sequence[str], references: Sequence[str]) -> float:
    """The corpus score on a 0-100 scale. BLEU is sacrebleu's corpus BLEU, not a mean of sentence BLEU;
    ROUGE is the mean F1 over examples, with stemming."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return float("nan")
    if metric in ("bleu", "chrf"):
        import sacrebleu

        scorer = sacrebleu.corpus_bleu if metric == "bleu" else sacrebleu.corpus_chrf
        return float(scorer(list(predictions), [list(references)]).score)
    if metric in ("rouge2", "rougeL"):
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer([metric], use_stemmer=True)
        total = sum(scorer.score(ref, pred)[metric].fmeasure for pred, ref in zip(predictions, references,
                                                                                   strict=True))
        return 100.0 * total / len(predictions)
    raise ValueError(f"unknown metric {metric!r}")
