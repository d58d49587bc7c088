"""The offline default: the generated toy task and the demo pair that ships in the package."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.models.loading import load_pair
from speccascade_bench.tasks.metrics import corpus_score
from speccascade_bench.toy.language import make_lexicon, make_splits, write_splits

PAIR = Path(__file__).parent.parent / "speccascade_bench" / "toy" / "pair"
SIZES = {"train": 20000, "validation": 200, "test": 500}  # the sizes `scb toy-data` writes


def test_toy_task_is_deterministic_and_splits_are_disjoint(tmp_path):
    a = make_splits(0, {"train": 300, "test": 50})
    assert a == make_splits(0, {"train": 300, "test": 50})
    assert a != make_splits(1, {"train": 300, "test": 50})
    train_sources = {row["src"] for row in a["train"]}
    assert not train_sources & {row["src"] for row in a["test"]}
    paths = write_splits(tmp_path, 0, {"train": 300, "test": 50})
    assert paths["test"].read_text().count("\n") == 50


def test_toy_task_does_not_depend_on_the_hash_seed(tmp_path):
    """The same seed gives the same files in processes with different string hashing."""
    digests = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-m", "speccascade_bench.cli", "toy-data", "--out", str(out), "--train", "50",
                        "--validation", "5", "--test", "20"], check=True, env=env, capture_output=True)
        digests.append([(out / f"{split}.jsonl").read_bytes() for split in ("train", "validation", "test")])
    assert digests[0] == digests[1]


def test_toy_translation_follows_the_lexicon_and_reordering():
    lex = make_lexicon(0)
    for pair in make_splits(0, {"test": 200})["test"]:
        src, tgt = pair["src"].split(), pair["tgt"].split()
        assert len(src) == len(tgt)  # word for word, reordered
        verb = lex.target["verb"].index(tgt[-1])  # the verb moves to the end
        assert lex.source["verb"][verb] in src


def test_demo_pair_loads_and_the_verifier_beats_the_drafter():
    pair = load_pair(str(PAIR / "drafter"), str(PAIR / "verifier"), device="cpu")
    assert pair.is_encoder_decoder
    drafter_params = sum(p.numel() for p in pair.drafter.parameters())
    verifier_params = sum(p.numel() for p in pair.verifier.parameters())
    assert verifier_params > 5 * drafter_params
    test = make_splits(0, SIZES)["test"][:40]
    settings = DecodingConfig(max_new_tokens=64, temperature=0.0)
    scores = {}
    for role in ("drafter", "verifier"):
        predictions = [pair.decode(decode(role, pair, pair.encode(row["src"], 96), settings).tokens)
                       for row in test]
        scores[role] = corpus_score("bleu", predictions, [row["tgt"] for row in test])
    assert scores["verifier"] >= 80, scores
    assert 30 <= scores["drafter"] <= scores["verifier"] - 15, scores
    assert pair.verifier.dtype == torch.float32  # loaded in the requested dtype from fp16 weights
