"""Benchmark a chain of three models against two-model speculative decoding with the same largest model.

In this one process, examples interleaved, every case decoding every example once untimed (warm-up) and once
timed, on the shipped toy chain (byte-level T5s: drafter 1+1 layers, middle 2+2, verifier 4+4; toy translation
inputs) or on models given by path:
  - `verifier` alone: the reference
  - `spec_decode` drafter -> verifier and middle -> verifier (each at its best draft length of those tried)
  - `staged_spec_decode` drafter -> middle -> verifier at each pair of draft lengths tried
For each: ms per example, speed-up over the verifier, counted calls per model, acceptance per level, and the
prediction (`analysis.tradeoff.chain_speedup`, Leviathan et al.'s for a pair) from the measured acceptances and
the per-call costs of each model alone, with the measured speed-up over it.

Usage: python scripts/bench_chain.py [--quick] [--examples N] [--temperature T] [--chain DRAFTER MIDDLE VERIFIER]
It reports; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from speccascade_bench.analysis.tradeoff import acceptance_probability, chain_speedup, per_call_cost
from speccascade_bench.decoding.dispatch import decode
from speccascade_bench.decoding.settings import DecodingConfig
from speccascade_bench.models.cached import ModelPair
from speccascade_bench.models.loading import load_pair
from speccascade_bench.run.session import device_info
from speccascade_bench.run.timing import timed
from speccascade_bench.toy.language import make_splits

TOY = Path(__file__).resolve().parent.parent / "speccascade_bench" / "toy" / "pair"


def _cases(quick: bool) -> list[tuple[str, str, dict, tuple[str, ...]]]:
    """(label, method, params, roles of the models it uses)."""
    cases = [("verifier", "verifier", {}, ("verifier",)), ("drafter", "drafter", {}, ("drafter",)),
             ("middle", "middle", {"level": 1}, ("middle1",))]
    for gamma in ((5,) if quick else (3, 5, 8)):
        cases.append((f"spec drafter->verifier g{gamma}", "spec_decode", {"draft_length": gamma},
                      ("drafter", "verifier")))
        cases.append((f"spec middle->verifier g{gamma}", "spec_decode", {"draft_length": gamma},
                      ("middle1", "verifier")))
    for gammas in (((2, 5),) if quick else ((1, 3), (2, 5), (3, 5), (3, 8))):
        cases.append((f"staged g{gammas[0]}+{gammas[1]}", "staged_spec_decode", {"draft_lengths": list(gammas)},
                      ("drafter", "middle1", "verifier")))
    return cases


def _models_for(chain: ModelPair, roles: tuple[str, ...]) -> ModelPair:
    """The chain's models in `roles` as a pair (or the chain itself); one-model runs use the chain."""
    if len(roles) != 2:
        return chain
    return ModelPair(chain.model(roles[0]), chain.model(roles[1]), chain.tokenizer, chain.device, chain.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--examples", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--chain", nargs=3, metavar=("DRAFTER", "MIDDLE", "VERIFIER"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    names = args.chain or [str(TOY / "drafter"), str(TOY / "middle"), str(TOY / "verifier")]
    chain = load_pair(names[0], names[2], device=args.device, middle=(names[1],))
    n = args.examples or (10 if args.quick else 60)
    sources = [row["src"] for row in make_splits(0, {"train": 20000, "validation": 200, "test": 500})["test"][:n]]
    inputs = [chain.encode(s, 512) for s in sources]
    settings = DecodingConfig(max_new_tokens=64, temperature=args.temperature)
    cases = _cases(args.quick)
    seconds = {label: 0.0 for label, *_ in cases}
    results = {label: [] for label, *_ in cases}
    for i, ids in enumerate(inputs):
        for label, method, params, roles in cases:
            models = _models_for(chain, roles)

            def run(models=models, method=method, params=params, i=i, ids=ids):
                generator = torch.Generator().manual_seed(i)
                return decode(method, models, ids, settings, params, generator)

            run()  # untimed: warm-up
            result, elapsed = timed(run, chain.device)
            seconds[label] += elapsed
            results[label].append(result)
    _report(args, chain, cases, seconds, results, n)


def _report(args, chain, cases, seconds, results, n) -> None:
    roles_of = {label: roles for label, _, _, roles in cases}

    def calls(label, role):
        """Calls of a chain role; a pair's drafter and verifier are the chain roles it was built from."""
        roles = roles_of[label]
        names = dict(zip(("drafter", "verifier"), roles, strict=True)) if len(roles) == 2 else {}
        return [sum(n for name, n in r.calls_by_role().items() if names.get(name, name) == role)
                for r in results[label]]

    cost = {role: per_call_cost([seconds[label] / n] * n, calls(label, role))
            for label, role in (("drafter", "drafter"), ("middle", "middle1"), ("verifier", "verifier"))}
    print(f"device: {device_info(chain.device)}; {n} examples, temperature {args.temperature}")
    print("per-call cost (ms): " + ", ".join(f"{role} {1000 * c:.3f}" for role, c in cost.items()))
    reference = seconds["verifier"]
    print(f"{'case':<28} {'ms/ex':>7} {'speed-up':>9} {'calls d/m/v':>16} {'accept':>12} {'predicted':>9} "
          f"{'of pred.':>8}")
    for label, method, params, roles in cases:
        mean_calls = "/".join(f"{sum(calls(label, role)) / n:.1f}"
                              for role in ("drafter", "middle1", "verifier"))
        accept, predicted = _prediction(results[label], method, params, roles, cost)
        speedup = reference / seconds[label]
        print(f"{label:<28} {1000 * seconds[label] / n:7.1f} {speedup:8.2f}x {mean_calls:>16} {accept:>12} "
              f"{predicted:8.2f}x {speedup / predicted if predicted == predicted else float('nan'):8.2f}")


def _prediction(results, method, params, roles, cost) -> tuple[str, float]:
    """Acceptance per level and the predicted speed-up (NaN for one-model cases)."""
    if method == "staged_spec_decode":
        levels = [(sum(r.levels[j]["accepted"] for r in results), sum(r.levels[j]["rejections"] for r in results))
                  for j in range(2)]
        gammas = params["draft_lengths"]
    elif method == "spec_decode":
        levels = [(sum(r.accepted for r in results), sum(r.rejections for r in results))]
        gammas = [params["draft_length"]]
    else:
        return "-", float("nan")
    acceptances = [acceptance_probability(a, r) for a, r in levels]
    costs = [cost[role] / cost["verifier"] for role in roles]
    return "+".join(f"{a:.3f}" for a in acceptances), chain_speedup(acceptances, gammas, costs)


if __name__ == "__main__":
    main()
