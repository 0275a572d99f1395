#!/usr/bin/env bash
# Run from the project root after ../shared/device/stage.sh, before a device call. The GPU machine
# has no package access; its gpu-env.sh unpacks every .deb in .device/debs/ into /opt/tbb, where
# cmake/KilnDeps.cmake also looks. This adds the Debian packages kiln needs beyond TBB:
#   nlohmann-json3-dev   header-only JSON (Note [JSON stays private] in cmake/KilnDeps.cmake)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$root/.device/debs"
cd "$root/.device/debs"
for p in nlohmann-json3-dev; do
  if ! ls "${p}"_*.deb >/dev/null 2>&1; then
    apt-get download "$p"
  fi
done
echo "staged in .device/debs: $(ls)"
