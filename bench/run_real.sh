#!/usr/bin/env bash
# Issue 19: real architectures on the GPU machine. Builds kiln-real-bench, traces the models and
# compiles their AOTInductor packages and torch.compile timings (bench/real_models.py, into a temp
# dir: packages are large, they stay out of $OUT), times kiln vs eager vs AOTI (kiln-real-bench),
# then the first call of eager and kiln (cold cache, then warm twice) for bert and resnet50.
# Usage (device tool, after ../shared/device/stage.sh, carry [".device"]):
#   source .device/gpu-env.sh && bash bench/run_real.sh
# Environment:
#   MODELS=bert,gpt2,llama,resnet50,vit   models (default all; AOTI compiles take 10-100 s each and
#                                         torch.compile one cold compile per batch, so split a full
#                                         run over two calls, e.g. MODELS=bert,gpt2,llama then
#                                         MODELS=resnet50,vit)
#   SKIP_AOTI=1, SKIP_COMPILE=1           leave out the AOTI packages / the torch.compile peer
#   BATCHES=1,8,32  SEQ=128               sizes timed
#   FIRST_CALL=bert,resnet50              models of the first-call runs (of those in MODELS; empty:
#                                         none), at batch FIRST_BATCH=1
#   AOTI_JOBS=1                           AOTI packages compiled at once (> 1 inflates seconds)
#   GRAPHS=1                              also time kiln with CUDA graph replay off (kiln-real-bench
#                                         --graphs: in the row's notes)
#   PROFILE=1                             kiln's per-step profile at the last batch of each model
#                                         (kiln-real-bench --profile: in real.err)
# Output in $OUT: real.md (the table), real_models.md (trace checks, AOTI compile seconds,
# torch.compile table), real_first_call.md, models.tsv, aoti_manifest.tsv, torch_compile.tsv, and
# the logs (real.err: kiln's stats and explain() per model).
set -uo pipefail
out="${OUT:-/tmp/kiln-out}"
mkdir -p "$out"
models="${MODELS:-bert,gpt2,llama,resnet50,vit}"
batches="${BATCHES:-1,8,32}"
seq="${SEQ:-128}"
first_models="${FIRST_CALL-bert,resnet50}"
first_batch="${FIRST_BATCH:-1}"
start=$SECONDS
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/card.txt"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/configure.log" 2>&1 \
  || { tail -30 "$out/configure.log"; exit 1; }
cmake --build build-gpu -j 16 --target kiln-real-bench > "$out/build.log" 2>&1 \
  || { grep -E "error|FAILED" "$out/build.log" | head -40; exit 1; }
echo "== build done ($((SECONDS - start)) s)"

dir=$(mktemp -d /tmp/kiln-real-XXXXXX)
trap 'rm -rf "$dir"' EXIT
flags=(--models "$models" --batches "$batches" --seq "$seq" --jobs "${AOTI_JOBS:-1}")
[ "${SKIP_AOTI:-0}" = 1 ] && flags+=(--no-aoti)
[ "${SKIP_COMPILE:-0}" = 1 ] && flags+=(--no-compile)
python3 bench/real_models.py "$dir" "${flags[@]}" > "$out/real_models.md" 2> "$out/real_models.err"
echo "== real_models.py rc=$? ($((SECONDS - start)) s)"
for f in models.tsv aoti_manifest.tsv torch_compile.tsv; do
  [ -f "$dir/$f" ] && cp "$dir/$f" "$out/$f"
done

# A fresh kiln cache, so "kiln first call + settling" is the cold cost on every machine.
kc=$(mktemp -d /tmp/kiln-real-cache-XXXXXX)
kflags=(--models "$models" --batches "$batches" --seq "$seq")
[ "${GRAPHS:-0}" = 1 ] && kflags+=(--graphs)
[ "${PROFILE:-0}" = 1 ] && kflags+=(--profile)
KILN_CACHE_DIR=$kc ./build-gpu/bench/kiln-real-bench "$dir" "${kflags[@]}" > "$out/real.md" 2> "$out/real.err"
echo "== kiln-real-bench rc=$? ($((SECONDS - start)) s)"
rm -rf "$kc"

fc="$out/real_first_call.md"
echo "| model | contender | load ms | first call ms | total ms | notes |" > "$fc"
echo "|---|---|---|---|---|---|" >> "$fc"
IFS=, read -ra wanted <<< "$models"
IFS=, read -ra firsts <<< "$first_models"
for model in "${firsts[@]}"; do
  [[ " ${wanted[*]} " == *" $model "* ]] || continue
  run() { ./build-gpu/bench/kiln-real-bench "$dir" --model "$model" --batch "$first_batch" \
            --seq "$seq" --first-call "$@" >> "$fc" 2>> "$out/real_first_call.err"; }
  run eager
  kc=$(mktemp -d /tmp/kiln-real-cache-XXXXXX)
  KILN_CACHE_DIR=$kc run cold
  KILN_CACHE_DIR=$kc run warm
  KILN_CACHE_DIR=$kc run warm
  rm -rf "$kc"
done
echo "== first call done ($((SECONDS - start)) s)"

for f in real.md real_models.md real_first_call.md; do
  echo
  echo "### ${f%.md}"
  echo
  cat "$out/$f"
done
echo
echo "### kiln stats per model (real.err has explain() too)"
grep -A1 "^== " "$out/real.err" | grep -v "where kiln.s time goes" -A0
for f in real_models.err real_first_call.err; do
  [ -s "$out/$f" ] && { echo; echo "### tail of $f"; grep -v "Warning\|warn(" "$out/$f" | tail -15; }
done
echo
echo "== done in $((SECONDS - start)) s"
