"""One loaded model pair deciding examples: `Session` warms up, measures call costs, and decodes an example
with each of its method runs, timed the same way for every method, into the rows of the results files.
"""

from __future__ import annotations

import logging
import platform
import subprocess
from collections.abc import Callable

import torch

from ..decoding.dispatch import decode
from ..decoding.methods import DRAFTER
from ..decoding.router import token_features
from ..results.manifest import device_kind
from ..results.record import ExampleRow
from ..results.settings import MethodRun, RunConfig
from ..tasks.data import Example
from ..tasks.prompts import cut_at_stop, prompt_ids
from ..tasks.scoring import Scorer
from .plan import PROBE_EXAMPLES, PROBE_POSITIONS, draft_lengths, prompt_format, static_shapes
from .settings import Progress
from .timing import timed, wide_call_cost

log = logging.getLogger(__name__)


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, driver=_nvidia_driver())
    return info


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _record(example: Example, run: MethodRun, result, prediction: str, latencies: list[float],
            input_tokens: int) -> ExampleRow:
    """An example's row before it is scored and placed (`shots`, `score`, `verdict`, `worker`)."""
    return ExampleRow(
        example_id=example.example_id, run_id=run.run_id, method=run.method, params=run.params,
        prediction=prediction, reference=example.reference, references=list(example.references),
        output_tokens=result.output_length, input_tokens=input_tokens, latency_s=sum(latencies) / len(latencies),
        latency_trials_s=latencies, calls=result.calls_by_role(), levels=result.levels,
        drafted=result.drafted, accepted=result.accepted, rounds=result.rounds,
        accepted_per_round=result.accepted_per_round, rejections=result.rejections, deferred=result.deferred,
        confidence=result.confidence, token_logprobs=result.drafter_token_logprobs)


def worker_label(hardware: dict, device: str | None = None, session: str | None = None) -> dict:
    """Where and when an example ran, as its rows record it (`worker`): the host, the device, the device kind
    (`results.manifest.device_kind`), which tells `scb report` whether latencies may be compared, and the `scb run`
    that timed it (`session`, its start), which tells it whether they were timed together."""
    label = {"host": platform.node(), "device": device or hardware["device"], "kind": device_kind(hardware)}
    return label if session is None else {**label, "session": session}


class Session:
    """A model pair set up to decode the examples of one run: static caches sized for its method runs (with
    compiled steps when configured), the warm-up and call-cost probe, and the per-example work
    (`decode_example`) that `run_job` and the Ray workers of `distributed` share. `worker` (`worker_label`)
    is added to every row."""

    def __init__(self, config: RunConfig, pair, runs: list[MethodRun], device: torch.device, sample: Example,
                 worker: dict, progress: Progress | None = None, scorer: Scorer | None = None):
        self.config, self.pair, self.runs, self.device, self.worker = config, pair, runs, device, worker
        self.scorer = scorer or Scorer(config.task)
        task = config.task
        pair.stop = task.stop
        self.layout = prompt_format(task)  # a chat task's template was checked by `prepare`
        if config.models.cache == "static":
            if progress and config.models.compile != "none":
                progress("compiling decode steps", 0, 0)
            pair.use_static_caches(static_shapes(config, runs), self.encode(sample))

    def prompt(self, example: Example) -> tuple[torch.Tensor, int]:
        """An example's prompt as [1, L] ids on the pair's device (`prompts.prompt_ids`), and how many shots
        it kept."""
        ids, shots = prompt_ids(self.pair.tokenizer, example.parts, self.layout, not self.pair.is_encoder_decoder)
        return torch.tensor([ids], dtype=torch.long, device=self.pair.device), shots

    def encode(self, example: Example) -> torch.Tensor:
        return self.prompt(example)[0]

    def _decode(self, input_ids: torch.Tensor, example_id: int, run: MethodRun):
        # The same seed for every method and trial of an example, wherever it runs: common random numbers.
        generator = torch.Generator(device=self.device).manual_seed(self.config.decoding.seed * 1_000_003 + example_id)
        return decode(run.method, self.pair, input_ids, self.config.decoding, run.params, generator)

    def warm_up(self, examples: list[Example], progress: Progress | None = None) -> dict[str, float]:
        """Decode the first `timing.warmup` of `examples` with every method run, untimed and unrecorded; then
        measure the call costs (`call_costs`) on the first PROBE_EXAMPLES of them and return them."""
        for example in examples[: self.config.timing.warmup]:
            input_ids = self.encode(example)
            for run in self.runs:
                self._decode(input_ids, example.example_id, run)
        if progress:
            progress("measuring call costs", 0, 0)
        return call_costs(self.pair, self.config, self.runs, [self.encode(ex) for ex in examples[:PROBE_EXAMPLES]])

    def decode_example(self, example: Example, runs: list[MethodRun],
                       on_row: Callable[[dict], None] | None = None) -> list[dict]:
        """Decode one example with each of `runs` in turn, each timed over `timing.trials` (the device idle at
        both ends of every trial); returns the example's rows. `on_row` gets each row as its run finishes."""
        input_ids, shots = self.prompt(example)
        self.pair.stop = example.stop if example.stop is not None else self.config.task.stop
        rows = []
        for run in runs:
            latencies = []
            for _ in range(self.config.timing.trials):
                result, seconds = timed(lambda r=run: self._decode(input_ids, example.example_id, r), self.device)
                latencies.append(seconds)
            prediction = cut_at_stop(self.pair.decode(result.tokens), self.pair.stop)
            record = _record(example, run, result, prediction, latencies, int(input_ids.shape[1]))
            record.score, record.verdict, record.lm_eval = self.scorer.scored(example, prediction)
            record.shots, record.worker = shots if example.fewshot is None else example.fewshot, self.worker
            if run.method == DRAFTER and "tokens" in self.config.record:  # untimed, after the timed trials
                record.token_stats = reference_stats(self.pair, input_ids, example.reference,
                                                     self.config.decoding.max_new_tokens)
            row = record.to_json()
            rows.append(row)
            if on_row:
                on_row(row)
        return rows


def reference_stats(pair, input_ids: torch.Tensor, reference: str, limit: int) -> dict:
    """What `scb fit-router --level token` fits on, for one example (`ExampleRow.token_stats`): both models scored
    on the reference's first `limit` tokens after the prompt (the encoder-decoder's reference ending with EOS), one
    forward call each; per position the token features of q and p (`router.TOKEN_FEATURES`) and each model's
    probability of the reference token, rounded to 5 decimals."""
    ids = pair.tokenizer(reference, add_special_tokens=False).input_ids
    if pair.is_encoder_decoder:
        ids = [*ids, pair.eos_token_id]
    ids = ids[:limit]
    if not ids:
        return {"features": [], "q_ref": [], "p_ref": []}
    probs = {}
    for role in ("drafter", "verifier"):
        decoder = pair.decoder(role, input_ids)
        decoder.extend(ids)
        probs[role] = torch.softmax(decoder.logits(keep=len(ids) + 1)[: len(ids)], dim=-1)
    q, p = probs["drafter"], probs["verifier"]
    index = torch.tensor(ids, device=q.device).unsqueeze(-1)

    def rounded(values: torch.Tensor) -> list:
        return torch.round(values.double(), decimals=5).tolist()

    return {"features": rounded(token_features(q, p)), "q_ref": rounded(q.gather(-1, index)[:, 0]),
            "p_ref": rounded(p.gather(-1, index)[:, 0])}


def call_costs(pair, config: RunConfig, runs: list[MethodRun], inputs: list[torch.Tensor]) -> dict[str, float]:
    """What one verifier call over gamma + 1 positions costs, in one-token verifier steps, for each draft length
    gamma of the runs (`timing.wide_call_cost`, from three positions spread over the output length); the
    summary prices Leviathan et al.'s prediction with it. Draft lengths too long for the outputs are left out."""
    gammas = sorted(draft_lengths(runs))
    costs = {}
    for gamma in gammas:
        # A position and a call must fit in the outputs; positions past PROBE_POSITIONS are not probed.
        room = min(config.decoding.max_new_tokens, PROBE_POSITIONS) - gamma - 1
        if room < 1:  # outputs too short to time a call over gamma + 1 positions after the first
            continue
        positions = tuple(sorted({max(1, room * k // 4) for k in (1, 2, 3)}))
        costs[str(gamma)] = wide_call_cost(pair, "verifier", inputs, gamma + 1, positions, repeats=5)
    return costs
