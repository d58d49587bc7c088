"""`scb fit-router`: fit a learned deferral router (`decoding.router`) on a results folder that holds the drafter's
and the verifier's outputs on a fitting split.

The model is scikit-learn's logistic regression on standardised features, its L2 strength chosen by stratified
k-fold cross-validation on log loss (`LogisticRegressionCV`): the token rule mixes by the probability itself, and
ROC AUC, blind to the scale of the logit, let the strongest penalty win and flattened it. A linear logit ranks
smoothly and stores as a few JSON numbers. Gradient boosting (`HistGradientBoostingClassifier`) ranked no better
on the toy pair's fitting split (per-fold weighted AUC 0.925 against the logistic's 0.926 at the token level; 0.704
against 0.685 at the sequence level, on 149 examples, within their noise) and would need skops to store.

Labels:
- sequence: y = 1 when the verifier's output scores better than the drafter's on the example (`score`), else 0,
  ties included (deferring then costs time for nothing), every example weighing 1. Weighting by the gain and
  leaving ties out, as the token level does, left 2 negative examples of 200 on the decoder-only toy pair (its
  verifier is rarely worse; the informative contrast is with the examples the drafter already gets right);
- token: y = 1 when the verifier gives the reference token more probability than the drafter, weight
  |p(ref) - q(ref)| (how far deferring there moves probability towards the reference), at every recorded position
  (`token_stats`, `record: [tokens]`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..decoding.methods import DRAFTER, REFERENCE
from ..decoding.router import FEATURES, FORMAT, Router, sequence_features
from ..files import ResultsError, refuse_link, write_file
from ..results.folder import read_manifest
from ..results.manifest import tokenizer_of
from ..results.record import ExampleRow
from ..results.rows import examples_dir, read_run

FOLDS = 5
MODEL = ("logistic regression (scikit-learn LogisticRegressionCV: L2, standardised features, C chosen among 10 "
         "values by stratified {folds}-fold cross-validation on log loss, sample weights)")
LABELS = {
    "sequence": "1 when the verifier's output scores better than the drafter's, else 0 (a tie too: deferring then "
                "costs time for nothing); every example weighs 1",
    "token": "1 when the verifier gives the reference token more probability than the drafter; weight "
             "|p(ref) - q(ref)|",
}
PLUG_IN = {"sequence": ("chow_average (minus the mean token log q)", "logprob_mean"),
           "token": ("chow (minus max q)", "max_q")}


def _rows(results: Path, run_id: str, role: str) -> tuple[Path, dict[int, ExampleRow]]:
    path = examples_dir(results) / f"{run_id}.jsonl"
    rows, _ = read_run(path) if path.is_file() else ([], 0)
    if not rows:
        raise ResultsError(f"{results} has no {role} outputs ({path} is missing or empty): run the drafter and the "
                           "verifier (methods `drafter` and `verifier`) on the fitting split first")
    return path, {row.example_id: row for row in rows}


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


LOGPROB_SLACK = 1e-4  # a log-probability above 0 by more than float rounding is none


def _numbers(path: Path, example: int, name: str, value, size: int | None = None, unit: bool = False,
             logprobs: bool = False) -> list:
    """A row's list of finite numbers (`size` of them; probabilities with `unit`, log-probabilities, at most 0,
    with `logprobs`); a ResultsError naming the file, the row's example and the field otherwise."""
    if not isinstance(value, list) or not all(_finite(v) and (not unit or 0 <= v <= 1)
                                              and (not logprobs or v <= LOGPROB_SLACK) for v in value):
        kind = ("probabilities in [0, 1]" if unit else "log-probabilities (numbers <= 0)" if logprobs else
                "finite numbers")
        raise ResultsError(f"{path}: the row of example {example}: {name} must be a list of {kind}")
    if size is not None and len(value) != size:
        raise ResultsError(f"{path}: the row of example {example}: {name} has {len(value)} values, not {size}")
    return value


def _sequence_data(results: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    (path, drafter), (large_path, verifier) = _rows(results, DRAFTER, "drafter"), _rows(results, REFERENCE, "verifier")
    ids = sorted(set(drafter) & set(verifier))
    if not ids:
        raise ResultsError(f"{results}: the drafter and the verifier decoded no example in common")
    xs, gains = [], []
    for example in ids:
        draft, large = drafter[example], verifier[example]
        if draft.token_logprobs is None:
            raise ResultsError(f"{results}: the drafter's rows have no token_logprobs (recorded by an earlier "
                               "version); run the drafter again")
        for where, row in ((path, draft), (large_path, large)):
            if not _finite(row.score):
                raise ResultsError(f"{where}: the row of example {example} has no per-example score (a finite "
                                   "number); the label is the gain in score from deferring")
        xs.append(sequence_features(_numbers(path, example, "token_logprobs", draft.token_logprobs, logprobs=True)))
        gains.append(large.score - draft.score)
    gains_array = np.asarray(gains, dtype=float)
    return np.asarray(xs, dtype=float), gains_array > 0, np.ones(len(gains_array)), ids


def _token_data(results: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    path, drafter = _rows(results, DRAFTER, "drafter")
    _rows(results, REFERENCE, "verifier")
    width = len(FEATURES["token"])
    xs, q_ref, p_ref, ids = [], [], [], []
    for example, row in sorted(drafter.items()):
        stats = row.token_stats
        if not isinstance(stats, dict) or not all(isinstance(stats.get(k), list) for k in ("features", "q_ref",
                                                                                          "p_ref")):
            raise ResultsError(f"{results}: the drafter's rows have no token_stats; run the fitting split with "
                               "`record: [tokens]` in its config")
        features = stats["features"]
        for position in features:
            _numbers(path, example, "a position of token_stats.features", position, width)
        xs += features
        q_ref += _numbers(path, example, "token_stats.q_ref", stats["q_ref"], len(features), unit=True)
        p_ref += _numbers(path, example, "token_stats.p_ref", stats["p_ref"], len(features), unit=True)
        ids.append(example)
    diff = np.asarray(p_ref, dtype=float) - np.asarray(q_ref, dtype=float)
    return np.asarray(xs, dtype=float).reshape(-1, width), diff > 0, np.abs(diff), ids


def fit(x: np.ndarray, y: np.ndarray, weight: np.ndarray, level: str, folds: int = FOLDS, seed: int = 0) -> tuple[
        Router, dict]:
    """A router fitted on features `x` [n, F], labels `y` and weights (examples of weight 0 left out): the
    cross-validated logistic regression, and its scores: the weighted ROC AUC of the router (fitted on the other
    folds) and of the level's plug-in score on each held-out fold, averaged over the folds. A ResultsError when a
    class has fewer than `folds` weighted examples."""
    import warnings

    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    finite = np.isfinite(x).all(axis=1) & np.isfinite(weight)
    if not finite.all():
        raise ResultsError(f"{int((~finite).sum())} of {len(x)} examples have a feature that is not a finite number "
                           "(a log-probability of -inf or NaN in the rows); fit on rows without them")
    keep = weight > 0
    x, y, weight = x[keep], y[keep], weight[keep]
    counts = (int(y.sum()), int((~y).sum()))
    if min(counts) < folds:
        raise ResultsError(f"{counts[0]} examples where deferring pays and {counts[1]} where it does not: too few of "
                           f"one kind for {folds}-fold cross-validation (fit on more examples)")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    xs = (x - mean) / scale
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed)
    plug_in = -x[:, FEATURES[level].index(PLUG_IN[level][1])]
    with warnings.catch_warnings():  # scikit-learn's notices of its own coming defaults
        warnings.simplefilter("ignore", FutureWarning)
        # log loss, not AUC, picks C: the token rule uses the probability itself, and AUC is blind to its scale
        model = LogisticRegressionCV(Cs=10, cv=splits, scoring="neg_log_loss", max_iter=5000)
        model.fit(xs, y, sample_weight=weight)
        c = float(model.C_[0])
        learned, plain = [], []
        for train, test in splits.split(xs, y):
            fold = LogisticRegression(C=c, max_iter=5000).fit(xs[train], y[train], sample_weight=weight[train])
            learned.append(roc_auc_score(y[test], fold.decision_function(xs[test]), sample_weight=weight[test]))
            plain.append(roc_auc_score(y[test], plug_in[test], sample_weight=weight[test]))
    router = Router(level, FEATURES[level], tuple(mean.tolist()), tuple(scale.tolist()),
                    tuple(model.coef_[0].tolist()), float(model.intercept_[0]))
    scores = {"C": c, "cv_auc": float(np.mean(learned)), "plug_in_auc": float(np.mean(plain)),
              "plug_in": PLUG_IN[level][0], "weighted_examples": int(len(y)), "positive": counts[0]}
    return router, scores


def fit_router(results: Path, level: str, out: Path, folds: int = FOLDS, seed: int = 0) -> Router:
    """Fit a router of `level` on a results folder and write it to `out` as JSON (never through a link, never over a
    file that is not a router); returns it."""
    import sklearn

    manifest = read_manifest(results)
    refuse_link(out)
    if out.exists():
        try:
            ours = json.loads(out.read_text(encoding="utf-8")).get("format") == FORMAT
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ResultsError(f"{out} exists and is not a router file; give another --out")
    x, y, weight, ids = _sequence_data(results) if level == "sequence" else _token_data(results)
    router, scores = fit(x, y, weight, level, folds, seed)
    cfg = manifest["config"]
    task = cfg["task"]
    fitted = {
        "pair": {"drafter": cfg["models"]["drafter"], "verifier": cfg["models"]["verifier"]},
        "tokenizer": tokenizer_of(cfg["models"].get("tokenizer"), cfg["models"]["verifier"]),
        "task": {key: task.get(key) for key in ("dataset", "subset", "split", "metric", "source", "target")},
        "examples": ids, "positions": int(len(x)) if level == "token" else None,
        "label": LABELS[level], "model": MODEL.format(folds=folds), "folds": folds, "seed": seed, **scores,
        "results": str(results), "temperature": cfg["decoding"]["temperature"],
        "scikit_learn": sklearn.__version__,
    }
    weights = {role: print_ for role, print_ in (cfg.get("weights") or {}).items() if role in ("drafter", "verifier")}
    if weights:  # what the pair's weights were when the fitting run decoded (the run's manifest records them)
        fitted["weights"] = weights
    router = Router(router.level, router.features, router.mean, router.scale, router.coef, router.intercept, fitted)
    text = json.dumps(router.to_dict(), indent=1)
    if not all(math.isfinite(v) for v in (*router.coef, router.intercept)):
        raise ResultsError(f"{results}: the fit gave non-finite coefficients")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_file(out, text + "\n")
    return router
