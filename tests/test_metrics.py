"""Corpus metrics agree with sacrebleu and rouge-score called directly."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from speccascade_bench.metrics import corpus_score

PREDICTIONS = ["the cat sat on the mat", "a quick brown fox jumps", "running dogs were barking loudly"]
REFERENCES = ["the cat is on the mat", "the quick brown fox jumped", "the dogs ran and barked loudly"]


def test_bleu_is_corpus_bleu_not_mean_of_sentence_bleu():
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score
    assert corpus_score("bleu", PREDICTIONS, REFERENCES) == pytest.approx(expected)
    mean_sentence = sum(sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(PREDICTIONS, REFERENCES, strict=True)) / 3
    assert expected != pytest.approx(mean_sentence)


def test_chrf():
    assert corpus_score("chrf", PREDICTIONS, REFERENCES) == pytest.approx(
        sacrebleu.corpus_chrf(PREDICTIONS, [REFERENCES]).score)


@pytest.mark.parametrize("metric", ["rouge2", "rougeL"])
def test_rouge_is_mean_stemmed_f1(metric):
    scorer = rouge_scorer.RougeScorer([metric], use_stemmer=True)
    expected = 100 * sum(scorer.score(r, p)[metric].fmeasure for p, r in zip(PREDICTIONS, REFERENCES, strict=True)) / 3
    assert corpus_score(metric, PREDICTIONS, REFERENCES) == pytest.approx(expected)
    # stemming matters: "barking"/"barked" and "running"/"ran" would not match without it
    unstemmed = rouge_scorer.RougeScorer([metric], use_stemmer=False)
    plain = 100 * sum(unstemmed.score(r, p)[metric].fmeasure for p, r in zip(PREDICTIONS, REFERENCES, strict=True)) / 3
    assert expected != pytest.approx(plain)


def test_perfect_and_mismatched_inputs():
    assert corpus_score("bleu", REFERENCES, REFERENCES) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="2 predictions but 3 references"):
        corpus_score("bleu", PREDICTIONS[:2], REFERENCES)
