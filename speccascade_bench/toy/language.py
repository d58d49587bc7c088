"""A synthetic translation task, generated deterministically from a seed.

Two made-up languages share a lexicon of determiners, nouns, adjectives, verbs and adverbs, each
word spelled independently in each language. The source language is SVO with adjectives before the
noun and a plural suffix; the target language puts both noun phrases before the verb, adjectives
after the noun, the adverb first, and marks plurals with a prefix and a plural determiner. A model has
to learn the lexicon's spellings byte by byte and the reordering, so small models are measurably worse
than larger ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from . import write_jsonl_splits

SOURCE_LETTERS = ("ptkbdgmnslrv", "aeiou")
TARGET_LETTERS = ("zxwhfjcqyn", "aeiouy")
CATEGORY_SIZES = {"det": 4, "noun": 40, "adj": 20, "verb": 24, "adv": 8}


@dataclass(frozen=True)
class Lexicon:
    """Parallel word lists: `source[category][i]` translates to `target[category][i]`."""

    source: dict[str, list[str]]
    target: dict[str, list[str]]
    target_plural_det: list[str]


def _make_words(rng: random.Random, letters: tuple[str, str], count: int, syllables: tuple[int, int]) -> list[str]:
    consonants, vowels = letters
    words: set[str] = set()
    while len(words) < count:
        n = rng.randint(*syllables)
        words.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(n)))
    ordered = sorted(words)  # a set's order depends on the process's hash seed; the shuffle must not
    rng.shuffle(ordered)
    return ordered


def make_lexicon(seed: int) -> Lexicon:
    rng = random.Random(seed)
    source, target = {}, {}
    for category, count in CATEGORY_SIZES.items():
        length = (1, 1) if category == "det" else (1, 3)
        source[category] = _make_words(rng, SOURCE_LETTERS, count, length)
        target[category] = _make_words(rng, TARGET_LETTERS, count, length)
    plural_det = _make_words(rng, TARGET_LETTERS, CATEGORY_SIZES["det"], (2, 2))
    return Lexicon(source, target, plural_det)


def _noun_phrase(rng: random.Random, lex: Lexicon) -> tuple[str, str]:
    det = rng.randrange(len(lex.source["det"]))
    noun = rng.randrange(len(lex.source["noun"]))
    adjs = rng.sample(range(len(lex.source["adj"])), rng.choice((0, 0, 1, 1, 2)))
    plural = rng.random() < 0.3
    src_noun = lex.source["noun"][noun] + ("s" if plural else "")
    tgt_noun = ("ka" if plural else "") + lex.target["noun"][noun]
    src = [lex.source["det"][det], *(lex.source["adj"][a] for a in adjs), src_noun]
    tgt_det = (lex.target_plural_det if plural else lex.target["det"])[det]
    tgt = [tgt_det, tgt_noun, *(lex.target["adj"][a] for a in reversed(adjs))]
    return " ".join(src), " ".join(tgt)


def make_pair(rng: random.Random, lex: Lexicon) -> dict[str, str]:
    """One sentence pair: {"src": ..., "tgt": ...}."""
    subj_src, subj_tgt = _noun_phrase(rng, lex)
    obj_src, obj_tgt = _noun_phrase(rng, lex)
    verb = rng.randrange(len(lex.source["verb"]))
    src = [subj_src, lex.source["verb"][verb], obj_src]
    tgt = [subj_tgt, obj_tgt, lex.target["verb"][verb]]
    if rng.random() < 0.4:
        adv = rng.randrange(len(lex.source["adv"]))
        src.append(lex.source["adv"][adv])
        tgt.insert(0, lex.target["adv"][adv])
    return {"src": " ".join(src), "tgt": " ".join(tgt)}


def make_splits(seed: int, sizes: dict[str, int]) -> dict[str, list[dict[str, str]]]:
    """Disjoint splits of distinct sentence pairs, e.g. sizes={"train": 20000, "test": 500}."""
    lex = make_lexicon(seed)
    rng = random.Random(seed + 1)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {}
    for name, size in sizes.items():
        rows = []
        while len(rows) < size:
            pair = make_pair(rng, lex)
            if pair["src"] not in seen:
                seen.add(pair["src"])
                rows.append(pair)
        splits[name] = rows
    return splits


def write_splits(out_dir: Path, seed: int, sizes: dict[str, int]) -> dict[str, Path]:
    """Write each split as `<out_dir>/<split>.jsonl`; returns the paths."""
    return write_jsonl_splits(out_dir, make_splits(seed, sizes))
