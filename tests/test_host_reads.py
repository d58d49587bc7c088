"""Host reads of the speculative loop: one per round (the accepted count, the next token and the drafts, read
together), and one per decode for the counters kept on the device, whatever the draft length, the method, the
rule and the temperature; EOS and stop strings are then checked on the host. Counted by `HostReads`, itself
tested on each kind of read it counts."""

from pathlib import Path

import pytest
import torch

from speccascade_bench.decoding.deferral import RULES
from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.host_reads import HostReads, count_reads
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.models.loading import load_pair
from speccascade_bench.tasks.prompts import PromptFormat, PromptParts, prompt_ids
from speccascade_bench.toy import arithmetic

ROOT = Path(__file__).resolve().parents[1]
PAIR = ROOT / "speccascade_bench" / "toy" / "llm_pair"
ROUTER = ROOT / "results" / "toy" / "routers" / "toy_llm_token_t1.json"
RULE_ALPHA = {"chow": 0.3, "diff": 0.1, "opt": 0.0, "token_v1": 0.1, "token_v2": 0.1, "token_v3": 0.3,
              "learned": 0.5, "round_opt": 0.0, "budget_opt": -0.2}
RULE_EXTRA = {"learned": {"router": str(ROUTER)}, "budget_opt": {"rho": 0.2}}
CASES = [("spec_decode", {}), ("lossy_spec_decode", {"alpha": 0.3, "beta": 1.0})] + [
    ("spec_cascade", {"rule": rule, "alpha": RULE_ALPHA[rule]} | RULE_EXTRA.get(rule, {})) for rule in RULES]


def test_every_kind_of_host_read_is_counted():
    with torch.inference_mode():
        t = torch.tensor([3.0, 0.0]) * 2  # an inference tensor: Python's conversions skip the dispatcher
    with HostReads() as reads:
        int(t[0]), float(t[0]), t[0].item(), bool(t[0] > 0), [1, 2][t[1].long()], t.tolist(), t.numpy()
        t.nonzero(), t[t > 0], torch.equal(t, t), torch.masked_select(t, t > 0)
    assert dict(reads.counts) == {"int": 1, "float": 1, "item": 1, "bool": 1, "index": 1, "tolist": 1, "numpy": 1,
                                  "nonzero": 1, "mask_index": 1, "equal": 1, "masked_select": 1}
    with HostReads() as reads:  # device-side work alone reads nothing
        (t.softmax(-1).cumsum(0) * 3).argmax().view(1)
        torch.multinomial(t + 1, 1, generator=torch.Generator().manual_seed(0))
    assert reads.total == 0


@pytest.fixture(scope="module")
def llm():
    """The shipped decoder-only pair with its task's stop strings, and three 4-shot arithmetic prompts."""
    pair = load_pair(str(PAIR / "drafter"), str(PAIR / "verifier"))
    pair.stop = ("\n\n", "\nQuestion:")
    splits = arithmetic.make_splits(0, {"shots": 4, "validation": 1, "test": 3})
    shots = tuple((f"Question: {row['question']}\nAnswer:", row["answer"]) for row in splits["shots"])
    prompts = [PromptParts("", shots, f"Question: {row['question']}\nAnswer:") for row in splits["test"]]
    return pair, [torch.tensor([prompt_ids(pair.tokenizer, p, PromptFormat(512), True)[0]]) for p in prompts]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("gamma", [1, 4, 8])
def test_a_speculative_round_reads_the_host_once(llm, gamma, temperature):
    pair, inputs = llm
    settings = DecodingConfig(max_new_tokens=24, temperature=temperature, draft_length=gamma)
    for method, params in CASES:
        for seed, input_ids in enumerate(inputs):
            result, reads = count_reads(decode, method, pair, input_ids, settings, params,
                                        torch.Generator().manual_seed(seed))
            label = f"{method} {params.get('rule', '')} gamma {gamma} T {temperature}: {dict(reads.counts)}"
            assert result.rounds >= 1 and result.tokens, label
            # one read per round, one per decode (the deferral kept on the device), none per drafted token
            assert reads.total <= result.rounds + 1, label
            assert reads.total / result.rounds <= 2, label


def test_the_counter_sees_a_loop_that_reads_per_token(llm):
    """The verifier alone reads each token to test it for EOS and stop strings: the count grows with the output."""
    pair, inputs = llm
    result, reads = count_reads(decode, "verifier", pair, inputs[0], DecodingConfig(max_new_tokens=24), {}, None)
    assert reads.total >= len(result.tokens)


CHAIN_CASES = [("staged_spec_decode", {"draft_lengths": [2, 3]}), ("staged_spec_decode", {"draft_lengths": [2, 4],
                                                                                          "horizontal": 2}),
               ("staged_spec_decode", {"draft_lengths": [2, 3], "drafter": "prompt_lookup"}),
               ("chain_spec_cascade", {"draft_lengths": [2, 3], "rules": ["opt", "chow"], "alphas": [0.2, 0.3]})]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_every_round_of_a_chain_reads_the_host_once(temperature):
    """A chain's levels run the pair's round (`speculative.Rounds`): one read per round of each level (the drafts of
    a level below come back with its round's read, and go up as the next level's drafts without another), and one
    per cascade level for its counters; the horizontal drafts from M_0 come back with the top round's read. (Before
    the levels shared the pair's round, a chain read its drafts and its round apart: 150 reads for 55 rounds.)"""
    from .test_chains import chain

    models = chain("llama")
    settings = DecodingConfig(max_new_tokens=20, temperature=temperature)
    for method, params in CHAIN_CASES:
        for seed in range(2):
            ids = torch.randint(3, 12, (1, 6), generator=torch.Generator().manual_seed(seed))
            result, reads = count_reads(decode, method, models, ids, settings, params,
                                        torch.Generator().manual_seed(seed))
            rounds = sum(level["rounds"] for level in result.levels)
            once = len(params.get("rules", ())) + (params.get("drafter") == "prompt_lookup")  # and its prompt, once
            assert result.tokens and rounds > len(result.levels), (method, params)
            assert reads.total == rounds + once, (method, params, dict(reads.counts), rounds)
