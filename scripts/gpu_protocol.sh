#!/usr/bin/env bash
# The GPU timing protocol of docs/PERFORMANCE.md in one command, cheapest stage first, each stage under
# its own time limit so that a short lease still brings back the first ones.
#
#   bash scripts/gpu_protocol.sh [OUT_DIR]        (default results/gpu-<date>)
#
# Stages (each writes OUT_DIR/<stage>.md, or .log when it failed or ran out of time), after gpu.txt
# (nvidia-smi and torch's view of the card):
#   exactness        tests/test_static_cache.py on the GPU: static caches, compiled steps and CUDA graphs give
#                    the dynamic-cache outputs for every method (needs pytest)
#   peers            bench_peers.py on the toy pair: the suite against generate(), assisted generation and
#                    transformers' static compiled loop, and the speed-ups against Leviathan's prediction, with
#                    the compiled cases in mode reduce-overhead (CUDA graphs)
#   scaling_dynamic  bench_scaling.py: per-token latency over 512 positions and memory over examples
#   scaling_static   the same with static caches and CUDA-graph steps
#   presets_dynamic  `scb run` of configs/latency_presets.yaml (T5 v1.1 small drafting for large, random
#                    weights, bfloat16) with transformers' dynamic caches
#   presets_static   the same on the fast path (static caches, CUDA graphs)
#   presets_chain    the `chain` variant: T5 v1.1 small -> base -> large on the fast path, staged speculative
#                    decoding against two-model speculative decoding (each model's per-call cost is real)
# Environment: PYTHON (default python3); STAGES (the stages to run, default all, in the order above);
# EXAMPLES (bench_peers examples, default 60); LIMIT (preset-run examples, default 20); STAGE_SECONDS (each
# stage's limit, default 900); DEVICE (default cuda; cpu runs the same commands on a CPU, as a check of the
# script); QUICK=1 (the benchmarks' --quick sizes).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/gpu-$(date +%F)}
py=${PYTHON:-python3}
examples=${EXAMPLES:-60}
limit=${LIMIT:-20}
stage_seconds=${STAGE_SECONDS:-900}
stages=" ${STAGES:-exactness peers scaling_dynamic scaling_static presets_dynamic presets_static presets_chain} "
device=${DEVICE:-cuda}
quick=()
[ "${QUICK:-0}" = 1 ] && quick=(--quick)
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

stage() {  # stage NAME COMMAND...: run under the time limit; keep the output as NAME.md, or NAME.log on failure
    local name=$1; shift
    [[ $stages == *" $name "* ]] || return 0
    local started=$SECONDS
    echo "== $name: $*"
    if timeout "$stage_seconds" "$@" > "$out/$name.md" 2> "$out/$name.err"; then
        rm -f "$out/$name.err"
        echo "   done in $((SECONDS - started)) s"
    else
        local rc=$?
        cat "$out/$name.md" "$out/$name.err" > "$out/$name.log" 2>/dev/null
        rm -f "$out/$name.md" "$out/$name.err"
        echo "   FAILED (exit $rc) after $((SECONDS - started)) s; see $out/$name.log"
    fi
}

{ nvidia-smi || true; "$py" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'transformers', transformers.__version__); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"; } > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"

stage exactness "$py" -m pytest -q -p no:cacheprovider tests/test_static_cache.py --device "$device"
stage peers "$py" scripts/bench_peers.py --device "$device" --compile-mode reduce-overhead --examples "$examples" \
    "${quick[@]}"
stage scaling_dynamic "$py" scripts/bench_scaling.py --device "$device" "${quick[@]}"
stage scaling_static "$py" scripts/bench_scaling.py --device "$device" --cache static --compile-mode reduce-overhead \
    "${quick[@]}"
if [ ! -f data/toy/test.jsonl ]; then
    "$py" -m speccascade_bench.cli toy-data --out data/toy > /dev/null
fi
run_methods=verifier,drafter,spec_decode,spec_cascade
stage presets_dynamic "$py" -m speccascade_bench.cli run --config configs/latency_presets.yaml --variant dynamic \
    --device "$device" --limit "$limit" --methods "$run_methods" --output "$out/latency_presets-dynamic" --fresh
stage presets_static "$py" -m speccascade_bench.cli run --config configs/latency_presets.yaml \
    --device "$device" --limit "$limit" --methods "$run_methods" --output "$out/latency_presets" --fresh
stage presets_chain "$py" -m speccascade_bench.cli run --config configs/latency_presets.yaml --variant chain \
    --device "$device" --limit "$limit" --output "$out/latency_presets-chain" --fresh
for run in "$out"/latency_presets*/; do
    [ -f "$run/summary.csv" ] && "$py" -m speccascade_bench.cli report "$run" > "$run/report.md" 2>&1
done
echo "outputs in $out"
