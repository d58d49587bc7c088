"""Metrics: corpus scores agree with sacrebleu and rouge-score, answer metrics follow the official SQuAD v2.0,
TriviaQA and GSM8K scorers, and the paired bootstrap resamples the same examples for both systems."""

import random
import re
import string
import time

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from speccascade_bench.tasks.bootstrap import BootstrapInterval, paired_bootstrap, resampled_scores
from speccascade_bench.tasks.metrics import (
    CORPUS_METRICS,
    NORMALIZERS,
    corpus_score,
    example_score,
    normalize_squad,
    normalize_triviaqa,
)
from speccascade_bench.tasks.patterns import clean_number, extract_answer

PREDICTIONS = ["the cat sat on the mat", "a quick brown fox jumps", "running dogs were barking loudly"]
REFERENCES = ["the cat is on the mat", "the quick brown fox jumped", "the dogs ran and barked loudly"]
GSM8K = r"#### (\-?[0-9\.\,]+)"


def _corpus(n, seed, keep):
    """n random reference sentences and a system that keeps each word with probability `keep`."""
    rng = random.Random(seed)
    words = "the a cat dog sat on mat quick brown fox jumps over lazy house tree river big small red".split()
    refs = [" ".join(rng.choices(words, k=rng.randint(5, 20))) for _ in range(n)]
    preds = [" ".join(w if rng.random() < keep else rng.choice(words) for w in r.split()) for r in refs]
    return preds, refs


# --- corpus scores of the text metrics --------------------------------------------------------------------


def test_bleu_is_corpus_bleu_not_mean_of_sentence_bleu():
    expected = sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score
    assert corpus_score("bleu", PREDICTIONS, REFERENCES) == pytest.approx(expected)
    mean_sentence = sum(sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(PREDICTIONS, REFERENCES, strict=True)) / 3
    assert expected != pytest.approx(mean_sentence)
    assert "bleu" in CORPUS_METRICS and "chrf" in CORPUS_METRICS


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


def test_sentence_scores_of_the_text_metrics_use_the_first_reference():
    pred, ref = PREDICTIONS[0], REFERENCES[0]
    assert example_score("bleu", pred, [ref, pred]) == pytest.approx(sacrebleu.sentence_bleu(pred, [ref]).score)
    assert example_score("chrf", pred, [ref]) == pytest.approx(sacrebleu.sentence_chrf(pred, [ref]).score)
    scorer = rouge_scorer.RougeScorer(["rouge2"], use_stemmer=True)
    assert example_score("rouge2", pred, ref) == pytest.approx(100 * scorer.score(ref, pred)["rouge2"].fmeasure)


def test_unknown_names_and_pass_at_1_fail_clearly():
    with pytest.raises(ValueError, match="did you mean 'exact_match'"):
        example_score("exact_mach", "a", ["a"])
    with pytest.raises(ValueError, match="did you mean 'squad'"):
        example_score("f1", "a", ["a"], normalize="sqad")
    with pytest.raises(ValueError, match="sandbox"):
        example_score("pass_at_1", "def f(): pass", ["assert f() is None"])
    with pytest.raises(ValueError, match="answer pattern"):
        example_score("bleu", "#### 3", ["#### 3"], answer_pattern=GSM8K)


# --- SQuAD v2.0 ---------------------------------------------------------------------------------------------


def test_squad_normalisation():
    assert normalize_squad("The Eiffel Tower!") == "eiffel tower"
    assert normalize_squad("  An  apple, a day... ") == "apple day"
    assert normalize_squad("don't") == "dont"  # punctuation is deleted, not replaced by a space
    assert normalize_squad("theatre") == "theatre"  # articles only as whole words
    assert NORMALIZERS["squad"] is normalize_squad and NORMALIZERS["none"]("  Mixed Case ") == "Mixed Case"


def test_squad_exact_match_and_f1_on_known_pairs():
    assert example_score("exact_match", "The Eiffel Tower!", ["eiffel tower"]) == 100.0
    assert example_score("f1", "The Eiffel Tower!", ["eiffel tower"]) == 100.0
    # tokens [big, red, barn] vs [red, barn, in, field]: 2 shared, precision 2/3, recall 1/2, F1 = 4/7
    assert example_score("f1", "the big red barn", ["red barn in the field"]) == pytest.approx(100 * 4 / 7)
    assert example_score("exact_match", "the big red barn", ["red barn in the field"]) == 0.0
    assert example_score("f1", "Paris", ["London"]) == 0.0


def test_squad_takes_the_best_gold():
    golds = ["Broncos", "Carolina Panthers"]
    assert example_score("exact_match", "Denver Broncos", golds) == 0.0
    assert example_score("f1", "Denver Broncos", golds) == pytest.approx(100 * 2 / 3)  # precision 1/2, recall 1
    assert example_score("exact_match", "the Broncos", golds) == 100.0


def test_squad_unanswerable_gold_is_the_empty_answer():
    for metric in ("exact_match", "f1"):
        assert example_score(metric, "", []) == 100.0
        assert example_score(metric, "  ", []) == 100.0
        assert example_score(metric, "Normandy", []) == 0.0
        assert example_score(metric, "", ["Normandy"]) == 0.0
    # golds that normalise to nothing are dropped, as in the official script
    assert example_score("exact_match", "", ["  ", "."]) == 100.0


def test_corpus_answer_metrics_are_means_over_alias_lists():
    predictions = ["Eiffel Tower", "", "Denver Broncos"]
    references = [["the Eiffel Tower"], [], ["Broncos", "Carolina Panthers"]]
    assert corpus_score("exact_match", predictions, references) == pytest.approx(200 / 3)
    assert corpus_score("f1", predictions, references) == pytest.approx((100 + 100 + 200 / 3) / 3)


# --- TriviaQA -----------------------------------------------------------------------------------------------


def test_triviaqa_normalisation_differs_from_squad():
    assert normalize_triviaqa("Don't") == "don t"
    assert normalize_triviaqa("New_York_City") == "new york city"
    assert normalize_triviaqa("\u2018Hamlet\u2019") == "hamlet"
    assert normalize_squad("\u2018Hamlet\u2019") == "\u2018hamlet\u2019"  # SQuAD keeps curly quotes
    assert normalize_triviaqa("rock\u00b4n`roll") == "rock n roll"
    assert normalize_triviaqa("The Beatles!") == "beatles"


def test_triviaqa_alias_list():
    aliases = ["Paris", "City of Light", "Paris, France"]
    assert example_score("exact_match", "city-of-light", aliases, normalize="triviaqa") == 100.0
    assert example_score("exact_match", "city-of-light", aliases, normalize="squad") == 0.0
    assert example_score("exact_match", "paris france", aliases, normalize="triviaqa") == 100.0
    assert example_score("exact_match", "Lyon", aliases, normalize="triviaqa") == 0.0


# --- GSM8K --------------------------------------------------------------------------------------------------


GSM8K_ANSWER = ("Each box holds 250 pencils, so 4 boxes hold 4 * 250 = <<4*250=1000>>1,000 pencils.\n"
                "#### 1,000")


def test_gsm8k_extraction():
    assert extract_answer(GSM8K_ANSWER, GSM8K) == "1,000"
    assert extract_answer("so she is left with 2 - 5 = -3.\n#### -3", GSM8K) == "-3"
    assert extract_answer("the answer is 1000", GSM8K) is None
    assert extract_answer("unchanged", None) == "unchanged"
    assert clean_number("1,000") == "1000" and clean_number("1,234.5") == "1234.5" and clean_number("-3") == "-3"
    assert clean_number("red, green") == "red, green"


def test_gsm8k_exact_match():
    def score(prediction, reference):
        return example_score("exact_match", prediction, [reference], answer_pattern=GSM8K, normalize="none")

    assert score("4 * 250 = 1000 pencils.\n#### 1000", GSM8K_ANSWER) == 100.0
    assert score("#### 1,000", "1000") == 100.0  # a reference without the marker is kept whole
    assert score("The answer is 1000.", GSM8K_ANSWER) == 0.0  # no marker in the prediction: wrong
    assert score("#### 999", GSM8K_ANSWER) == 0.0
    assert score("#### -3", "2 - 5 = -3\n#### -3") == 100.0
    assert score("#### 3", "2 - 5 = -3\n#### -3") == 0.0  # the sign counts without the SQuAD normaliser


# lm-evaluation-harness's GSM8K scoring, written here from its task config and RegexFilter: the strict-match filter
# takes the first match of GSM8K, the flexible-extract filter the last match of FLEXIBLE (its first non-empty
# group), each stripped, "[invalid]" when nothing matches; exact match then deletes the regexes_to_ignore from the
# filtered answer and from the whole gold solution, lower-cases both and compares.
FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
LM_EVAL_IGNORED = (",", r"\$", r"(?s).*#### ", r"\.$")


def lm_eval_gsm8k(prediction: str, gold: str, flexible: bool) -> float:
    import re

    found = re.findall(FLEXIBLE if flexible else GSM8K, prediction)
    if found:
        match = found[-1 if flexible else 0]
        if isinstance(match, tuple):
            match = next((group for group in match if group), "[invalid]")
        answer = match.strip()
    else:
        answer = "[invalid]"

    def ignore(text):
        for pattern in LM_EVAL_IGNORED:
            text = re.sub(pattern, "", text)
        return text.lower()

    return 100.0 * (ignore(answer) == ignore(gold))


GSM8K_CASES = [
    "4 * 250 = 1000 pencils.\n#### 1000", "#### 1,000", "#### 1,000.", "#### 1000.", "#### $1,000",
    "#### 1000.00", "The answer is 1,000.", "The answer is $1000.", "so 1000 pencils", "4 * 250 = 1000, then 999",
    "#### 999\n#### 1000", "####1000", "#### -1000", "", "no number here", "#### ", "1 000", "1000!", "-1000 or 1000",
    "#### 1,000\n\nQuestion: 12", "#### 1.000",
]


@pytest.mark.parametrize("flexible", [False, True])
def test_gsm8k_scores_agree_with_lm_evaluation_harness(flexible):
    """On worked predictions for one gold solution (and a negative and a dollar gold), the suite's exact match with
    `normalize: gsm8k` (strict: GSM8K's pattern, first match; flexible: lm-eval's pattern, `answer_select: last`)
    equals lm-eval's strict-match and flexible-extract scores."""
    golds = [GSM8K_ANSWER, "2 - 5 = -3.\n#### -3", "It costs $18.\n#### 18"]
    pattern, select = (FLEXIBLE, "last") if flexible else (GSM8K, "first")
    agreed = 0
    for gold in golds:
        for prediction in [*GSM8K_CASES, "#### -3", "#### 3", "-3.", "$18.", "#### 18.0"]:
            ours = example_score("exact_match", prediction, [gold], answer_pattern=pattern, normalize="gsm8k",
                                 answer_select=select)
            assert ours == lm_eval_gsm8k(prediction, gold, flexible), (prediction, gold)
            agreed += ours > 0
    assert agreed >= 5  # the cases include matches, not only misses


def test_the_suites_own_gsm8k_normalisation_differs_where_lm_eval_strips():
    """`normalize: none` keeps a trailing "." that lm-eval's strict match deletes: the reason for `gsm8k`."""
    assert example_score("exact_match", "#### 1,000.", [GSM8K_ANSWER], answer_pattern=GSM8K, normalize="none") == 0
    assert example_score("exact_match", "#### 1,000.", [GSM8K_ANSWER], answer_pattern=GSM8K, normalize="gsm8k") == 100
    assert extract_answer("a 12, then 3 and 45.", FLEXIBLE, "last") == "45."
    assert extract_answer("a 12, then 3", FLEXIBLE, "last") == "3"
    assert extract_answer("nothing", FLEXIBLE, "last") is None
    assert extract_answer("The answer is 7", FLEXIBLE, "first") == "7"  # the first non-empty group, as lm-eval
    with pytest.raises(ValueError, match="answer_select"):
        extract_answer("12", FLEXIBLE, "middle")


# --- paired bootstrap ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_full_sample_statistic_is_the_corpus_score(metric):
    preds, refs = _corpus(40, seed=1, keep=0.7)
    everything = np.arange(len(refs))[None, :]
    assert resampled_scores(metric, preds, refs, everything)[0] == pytest.approx(corpus_score(metric, preds, refs),
                                                                                 abs=1e-9)
    # a resample drawing one sentence twice is the corpus score of that duplicated corpus
    drawn = [0, 0, 3, 5]
    expected = corpus_score(metric, [preds[i] for i in drawn], [refs[i] for i in drawn])
    assert resampled_scores(metric, preds, refs, np.array([drawn]))[0] == pytest.approx(expected, abs=1e-9)


def test_full_sample_statistic_of_a_mean_metric_is_the_corpus_score():
    predictions, references = ["Eiffel Tower", "", "Denver Broncos"], [["the Eiffel Tower"], [], ["Broncos"]]
    assert resampled_scores("f1", predictions, references, np.arange(3)[None, :])[0] == pytest.approx(
        corpus_score("f1", predictions, references))


@pytest.mark.parametrize("metric", ["bleu", "exact_match"])
def test_identical_systems_differ_by_exactly_zero(metric):
    preds, refs = _corpus(30, seed=2, keep=0.8)
    interval = paired_bootstrap(metric, preds, preds, refs, resamples=200)
    assert interval == BootstrapInterval(0.0, 0.0, 0.0, 200)


def test_better_on_every_example_has_positive_low_only_when_paired():
    rng = np.random.default_rng(3)
    scores_b = rng.uniform(0, 100, size=200)  # wide spread between examples
    scores_a = scores_b + rng.uniform(0.5, 1.5, size=200)  # a small, consistent gain
    refs = [""] * 200
    interval = paired_bootstrap("f1", refs, refs, refs, scores_a, scores_b, resamples=500)
    assert interval.difference == pytest.approx(np.mean(scores_a - scores_b))
    assert 0.5 < interval.low <= interval.difference <= interval.high < 1.5
    # drawing the two systems' examples independently would drown the gain in the spread between examples
    unpaired = [scores_a[rng.integers(0, 200, 200)].mean() - scores_b[rng.integers(0, 200, 200)].mean()
                for _ in range(500)]
    assert np.quantile(unpaired, 0.025) < 0


def test_interval_width_matches_the_standard_error():
    rng = np.random.default_rng(4)
    gains = rng.normal(2.0, 10.0, size=400)
    refs = [""] * 400
    interval = paired_bootstrap("f1", refs, refs, refs, gains, np.zeros(400), resamples=2000, seed=5)
    expected_width = 2 * 1.96 * gains.std() / np.sqrt(400)
    assert interval.high - interval.low == pytest.approx(expected_width, rel=0.1)
    narrower = paired_bootstrap("f1", refs, refs, refs, gains, np.zeros(400), resamples=2000, seed=5, confidence=0.5)
    assert interval.low < narrower.low < narrower.high < interval.high


def test_bootstrap_seed_reproduces():
    preds_a, refs = _corpus(50, seed=6, keep=0.7)
    preds_b, _ = _corpus(50, seed=6, keep=0.6)
    first = paired_bootstrap("bleu", preds_a, preds_b, refs, resamples=300, seed=11)
    assert paired_bootstrap("bleu", preds_a, preds_b, refs, resamples=300, seed=11) == first
    other = paired_bootstrap("bleu", preds_a, preds_b, refs, resamples=300, seed=12)
    assert other.difference == first.difference and (other.low, other.high) != (first.low, first.high)


@pytest.mark.serial  # a time bound: run alone
def test_bootstrap_of_corpus_bleu_is_fast():
    preds_a, refs = _corpus(500, seed=7, keep=0.7)
    preds_b, _ = _corpus(500, seed=7, keep=0.6)
    start = time.perf_counter()
    interval = paired_bootstrap("bleu", preds_a, preds_b, refs, resamples=1000)
    assert time.perf_counter() - start < 5.0
    expected = corpus_score("bleu", preds_a, refs) - corpus_score("bleu", preds_b, refs)
    assert interval.difference == pytest.approx(expected)
    assert interval.low > 0


def test_bootstrap_rejects_bad_inputs():
    with pytest.raises(ValueError, match="corpus metric"):
        paired_bootstrap("bleu", ["a"], ["a"], ["a"], scores_a=[1.0])
    with pytest.raises(ValueError, match="2 scores but 1 predictions"):
        paired_bootstrap("pass_at_1", ["a"], ["a"], ["a"], scores_a=[1.0, 0.0], scores_b=[1.0])
    with pytest.raises(ValueError, match="sandbox"):
        paired_bootstrap("pass_at_1", ["a"], ["a"], ["a"])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap("f1", ["a"], ["a"], ["a"], confidence=1.0)


def test_golds_that_normalise_to_nothing_are_dropped_only_under_squad_normalisation():
    # SQuAD v2.0's script drops them: an empty prediction does not match "." when a real gold remains.
    assert example_score("exact_match", "", ["Normandy", "."], normalize="squad") == 0.0
    # TriviaQA's script keeps every alias: "." normalises to "" there too, and the empty prediction matches it.
    assert example_score("exact_match", "", ["Normandy", "."], normalize="triviaqa") == 100.0
    assert example_score("exact_match", "?!", ["Normandy", "..."], normalize="triviaqa") == 100.0
    assert example_score("exact_match", "", ["Normandy", " "], normalize="none") == 100.0
    # TriviaQA's token F1 is 0 when either answer has no token (no token in common); SQuAD's is 1 if both are empty.
    assert example_score("f1", "", ["Normandy", "."], normalize="triviaqa") == 0.0
    assert example_score("f1", "", ["."], normalize="squad") == 100.0
    # A question with no gold at all is unanswerable under every normalisation: only an empty answer is right.
    for normalize in ("squad", "triviaqa", "none"):
        assert example_score("f1", "", [], normalize=normalize) == 100.0
        assert example_score("exact_match", "Paris", [], normalize=normalize) == 0.0


@pytest.mark.parametrize("metric", ["bleu", "chrf", "exact_match"])
def test_several_systems_values_are_each_systems_own(metric, monkeypatch):
    """Values computed together (each reference read once, a sentence shared with an earlier system copied)
    are exactly each system's own, across block boundaries, with several references and empty sentences."""
    from speccascade_bench.tasks import bootstrap

    monkeypatch.setattr(bootstrap, "SENTENCES", 7)  # blocks of 7 examples: 20 examples cross two boundaries
    rng = random.Random(3)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", ".", "ran"]
    references = [[" ".join(rng.choice(words) for _ in range(rng.randint(0, 9))), "a cat"] for _ in range(20)]
    verifier = [refs[0] if i % 3 else " ".join(rng.choice(words) for _ in range(5))
                for i, refs in enumerate(references)]
    other = [verifier[i] if i % 2 else ("" if i % 4 == 0 else "the dog ran .") for i in range(20)]
    third = [other[i] if i % 5 else verifier[i][::-1] for i in range(20)]
    systems = [verifier, other, third]
    together = bootstrap.systems_values(metric, systems, references)
    for system, values in zip(systems, together, strict=True):
        np.testing.assert_array_equal(values, bootstrap.example_values(metric, system, references))
    assert bootstrap.systems_values(metric, [[]], []) [0].size == 0
    with pytest.raises(ValueError, match="2 predictions but 20 references"):
        bootstrap.systems_values(metric, [verifier, ["a", "b"]], references)


def _nq_open_reference(prediction: str, answers: list[str]) -> float:
    """NQ-open's exact match as its scorer (and DPR's `exact_match_score`) defines it: lower-case, remove
    punctuation, remove the articles a/an/the, fix whitespace; 1 if the prediction equals any answer so
    normalised, every answer kept, an empty one too."""
    def normalize_answer(s):
        s = s.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    return 100.0 * max(normalize_answer(prediction) == normalize_answer(answer) for answer in answers)


def test_nq_open_normalisation_is_nq_opens_exact_match_where_squad_drops_empty_answers():
    rng = random.Random(5)
    pieces = ["the", "a", "an", "!", "?", "...", "Paris", "paris", "1,000", "The Who", "", " ", "an apple", "'"]
    differs = 0
    for _ in range(3000):
        prediction = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 3)))
        answers = [" ".join(rng.choice(pieces) for _ in range(rng.randint(1, 2))) for _ in range(rng.randint(1, 3))]
        expected = _nq_open_reference(prediction, answers)
        assert example_score("exact_match", prediction, answers, normalize="nq_open") == expected, (prediction, answers)
        differs += example_score("exact_match", prediction, answers, normalize="squad") != expected
    assert differs > 50  # where an answer normalises to nothing, SQuAD v2's rule drops it and NQ-open's keeps it
    assert example_score("exact_match", "the", ["!", "Paris"], normalize="nq_open") == 100.0
    assert example_score("exact_match", "the", ["!", "Paris"], normalize="squad") == 0.0
