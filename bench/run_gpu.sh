#!/usr/bin/env bash
# Builds kiln on the GPU machine, runs the GPU tests, the demo and the benchmarks, and writes logs
# under $OUT. Usage (device tool, after ../shared/device/stage.sh, carry [".device"]):
#   source .device/gpu-env.sh && bash bench/run_gpu.sh [--quick]
set -uo pipefail
out="${OUT:-/tmp/kiln-out}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/card.txt"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/configure.log" 2>&1 \
  || { tail -30 "$out/configure.log"; exit 1; }
cmake --build build-gpu -j 16 -- -k 0 > "$out/build.log" 2>&1 || grep -E "error|FAILED" "$out/build.log" | head -40
echo "== build ok"
ctest --test-dir build-gpu --output-on-failure -j 4 -LE consumer > "$out/ctest.log" 2>&1
echo "== ctest: $(grep -E 'tests passed|tests failed' "$out/ctest.log")"
grep -E "^\s+[0-9]+ - .*(Failed|Exception|Timeout)" "$out/ctest.log" | head -30
./build-gpu/integrations/kiln-demo > "$out/demo.log" 2>&1; echo "== demo rc=$?"; tail -8 "$out/demo.log"
./build-gpu/bench/kiln-bench "$@" > "$out/bench.md" 2> "$out/bench.err"; echo "== kiln-bench rc=$?"
python3 bench/peer_torch_compile.py "$@" > "$out/peer.md" 2> "$out/peer.err"; echo "== peer rc=$?"
./build-gpu/bench/kiln-mixed-bench "$@" > "$out/mixed.md" 2> "$out/mixed.err"; echo "== kiln-mixed-bench rc=$?"
python3 bench/peer_mixed_shapes.py "$@" > "$out/peer_mixed.md" 2> "$out/peer_mixed.err"; echo "== peer-mixed rc=$?"
# First call, one process each: eager, kiln cold (empty cache), kiln warm (same cache, twice);
# torch.compile cold and warm over its own cache directory.
fc="$out/first_call.md"
echo "| model | contender | ms to model on GPU | first call ms | total ms | notes |" > "$fc"
echo "|---|---|---|---|---|---|" >> "$fc"
for model in encoder mlp; do
  ./build-gpu/bench/kiln-first-call --model $model --mode eager >> "$fc" 2>> "$out/first_call.err"
  kc=$(mktemp -d); ic=$(mktemp -d)
  for run in cold warm warm; do
    KILN_CACHE_DIR=$kc ./build-gpu/bench/kiln-first-call --model $model --mode kiln >> "$fc" 2>> "$out/first_call.err"
  done
  for run in cold warm; do
    TORCHINDUCTOR_CACHE_DIR=$ic python3 bench/peer_first_call.py --model $model >> "$fc" 2>> "$out/first_call.err"
  done
done
echo "== first call done"
cat "$out/bench.md" "$out/peer.md" "$out/mixed.md" "$out/peer_mixed.md" "$fc"
