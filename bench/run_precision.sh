#!/usr/bin/env bash
# Issue 21 (Note [Precision]): float32 models run in fp16/bf16 by kiln, against the same models
# converted to fp16 by hand, all against eager float32, in one process on one card. Traces MODELS
# in float32 and in float16 (same seed, same weights; no AOTI, no torch.compile), then runs
# kiln-real-bench DIR32 --precision DIR16.
# Usage (device tool, after ../shared/device/stage.sh, carry [".device"]):
#   source .device/gpu-env.sh && bash bench/run_precision.sh
# Environment: MODELS=bert,resnet50  BATCHES=1,8,32  SEQ=128  BUILD=build-gpu
# Output in $OUT: precision.md (the table), precision.err (kiln's stats and explain() per module),
# the trace logs.
set -uo pipefail
out="${OUT:-/tmp/kiln-out}"
mkdir -p "$out"
models="${MODELS:-bert,resnet50}"
build="${BUILD:-build-gpu}"
start=$SECONDS
if [ ! -x "$build/bench/kiln-real-bench" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/configure.log" 2>&1 \
    || { tail -30 "$out/configure.log"; exit 1; }
  cmake --build "$build" -j 16 --target kiln-real-bench > "$out/build.log" 2>&1 \
    || { grep -E "error|FAILED" "$out/build.log" | head -40; exit 1; }
fi
dir=$(mktemp -d /tmp/kiln-precision-XXXXXX)
trap 'rm -rf "$dir"' EXIT
for dtype in float32 float16; do
  python3 bench/real_models.py "$dir/$dtype" --models "$models" --dtype "$dtype" --no-aoti \
    --no-compile > "$out/trace_$dtype.md" 2> "$out/trace_$dtype.err" \
    || { echo "tracing in $dtype failed"; tail -20 "$out/trace_$dtype.err"; exit 1; }
done
echo "== traced ($((SECONDS - start)) s)"
kc=$(mktemp -d /tmp/kiln-precision-cache-XXXXXX)
KILN_CACHE_DIR=$kc "$build/bench/kiln-real-bench" "$dir/float32" --precision "$dir/float16" \
  --models "$models" --batches "${BATCHES:-1,8,32}" --seq "${SEQ:-128}" \
  > "$out/precision.md" 2> "$out/precision.err"
rc=$?
rm -rf "$kc"
echo "== kiln-real-bench --precision rc=$rc ($((SECONDS - start)) s)"
cat "$out/precision.md"
exit $rc
