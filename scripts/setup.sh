#!/usr/bin/env bash
# Installs what kiln's build needs on Debian 12, idempotently:
#   - Debian packages (only the missing ones are installed),
#   - a project-local virtual environment .venv with LibTorch (the torch wheel).
# The CUDA toolkit (NVRTC, cuBLAS, cuDNN headers and libraries) is expected in /usr/local/cuda.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

packages=(cmake ninja-build g++ make libgtest-dev libtbb-dev libfmt-dev nlohmann-json3-dev python3
          python3-venv)
missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# python3-venv is only needed where the python3 on PATH cannot make a venv (pyenv builds can).
if printf '%s\n' "${missing[@]}" | grep -qx python3-venv && python3 -m venv --help >/dev/null 2>&1 \
   && python3 -c 'import ensurepip' >/dev/null 2>&1; then
  missing=("${missing[@]/python3-venv}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ "${#missing[@]}" -gt 0 ]; then
  echo "kiln setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

if [ ! -x /usr/local/cuda/bin/nvcc ] && [ ! -f /usr/local/cuda/include/nvrtc.h ]; then
  echo "kiln setup: the CUDA toolkit (13.x) is required in /usr/local/cuda (NVRTC, headers)." >&2
  exit 1
fi

# The venv is ~1.7 GB and a Release build ~0.3 GB (a RelWithDebInfo one ~5.5 GB); say so up
# front rather than fail mid-link.
avail_kb="$(df -Pk . | awk 'NR==2 {print $4}')"
if [ -n "$avail_kb" ] && [ "$avail_kb" -lt $((3 * 1024 * 1024)) ]; then
  echo "kiln setup: warning: only $((avail_kb / 1024)) MB free in $root; the venv and a build" \
       "need about 3 GB" >&2
fi

stamp=".venv/.kiln-requirements-$(sha256sum scripts/requirements.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "kiln setup: creating .venv with LibTorch (first time only; ~1.2 GB download)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q --no-cache-dir --upgrade pip
  # --no-deps: skip the nvidia-* wheels /usr/local/cuda already provides (scripts/requirements.txt).
  .venv/bin/pip install -q --no-cache-dir --no-deps -r scripts/requirements.txt
  # Check the result can be imported with the toolkit's libraries before stamping it good.
  LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    .venv/bin/python -c "import torch; assert torch.__version__.startswith('2.11.0'), torch.__version__"
  rm -f .venv/.kiln-requirements-*
  touch "$stamp"
fi
