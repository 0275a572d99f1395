#!/usr/bin/env bash
# Builds kiln on the GPU machine, runs the GPU tests, the demo and the benchmarks, and writes logs
# under $OUT. Usage (device tool, after ../shared/device/stage.sh, carry [".device"]):
#   source .device/gpu-env.sh && bash bench/run_gpu.sh [--quick]
# STAGES picks a subset (the device tool allows 10 minutes a call), default all, in this order:
#   STAGES="tests demo bench peer aoti mixed first tune"
# The build always runs first. At the end it writes $OUT/RESULTS.md: bench/RESULTS.md with a new
# dated section on top (card, driver, command, every table of this run), and $OUT/speedup.png from
# it (bench/plot_speedup.py, where matplotlib is installed); copy both into bench/.
set -uo pipefail
out="${OUT:-/tmp/kiln-out}"
mkdir -p "$out"
stages=" ${STAGES:-tests demo bench peer aoti mixed first tune} "
want() { [[ "$stages" == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/card.txt"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/configure.log" 2>&1 \
  || { tail -30 "$out/configure.log"; exit 1; }
cmake --build build-gpu -j 16 -- -k 0 > "$out/build.log" 2>&1 || grep -E "error|FAILED" "$out/build.log" | head -40
echo "== build done"
if want tests; then
  ctest --test-dir build-gpu --output-on-failure -j 4 -LE consumer > "$out/ctest.log" 2>&1
  echo "== ctest: $(grep -E 'tests passed|tests failed' "$out/ctest.log")"
  grep -E "^\s+[0-9]+ - .*(Failed|Exception|Timeout)" "$out/ctest.log" | head -30
fi
if want demo; then
  ./build-gpu/integrations/kiln-demo > "$out/demo.log" 2>&1; echo "== demo rc=$?"; tail -8 "$out/demo.log"
fi
if want bench; then
  ./build-gpu/bench/kiln-bench "$@" > "$out/bench.md" 2> "$out/bench.err"; echo "== kiln-bench rc=$?"
fi
if want peer; then
  python3 bench/peer_torch_compile.py "$@" > "$out/peer.md" 2> "$out/peer.err"; echo "== peer rc=$?"
fi
if want aoti; then
  # AOTInductor peer: packages compiled by this machine's PyTorch (seconds per package: its cold
  # cost), then loaded from C++ and timed beside eager. Packages stay out of $OUT (~100 MB).
  aoti=$(mktemp -d)
  python3 bench/peer_aoti.py "$aoti" --models-dir build-gpu/models "$@" > "$out/aoti_compile.md" \
    2> "$out/aoti_compile.err"; echo "== peer-aoti packages rc=$?"
  cp "$aoti/manifest.tsv" "$out/aoti_manifest.tsv"
  ./build-gpu/bench/kiln-aoti-bench "$aoti" "$@" > "$out/aoti.md" 2> "$out/aoti.err"
  echo "== kiln-aoti-bench rc=$?"
fi
if want mixed; then
  ./build-gpu/bench/kiln-mixed-bench "$@" > "$out/mixed.md" 2> "$out/mixed.err"; echo "== kiln-mixed-bench rc=$?"
  python3 bench/peer_mixed_shapes.py "$@" > "$out/peer_mixed.md" 2> "$out/peer_mixed.err"; echo "== peer-mixed rc=$?"
fi
if want first; then
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
fi
if want tune; then
  ./build-gpu/bench/kiln-tune-bench "$@" > "$out/tune.md" 2> "$out/tune.err"; echo "== kiln-tune-bench rc=$?"
fi
section="$out/section.md"
{
  IFS=, read -r card driver memory < "$out/card.txt"
  echo "## $(date +%F), ${card} (driver${driver}), LibTorch $(python3 -c 'import torch; print(torch.__version__)')"
  echo
  echo "Command (device tool, carry \`.device\`): \`source .device/gpu-env.sh && STAGES=\"$(echo $stages)\" bash bench/run_gpu.sh $*\`."
  echo
  for f in bench.md peer.md aoti.md aoti_compile.md mixed.md peer_mixed.md first_call.md tune.md; do
    [ -f "$out/$f" ] || continue
    echo "### ${f%.md}"
    echo
    cat "$out/$f"
    echo
  done
} > "$section"
{ head -n 2 bench/RESULTS.md; cat "$section"; tail -n +3 bench/RESULTS.md; } > "$out/RESULTS.md"
python3 bench/plot_speedup.py "$out/RESULTS.md" "$out/speedup.png" || echo "== no plot (matplotlib?)"
cat "$section"
