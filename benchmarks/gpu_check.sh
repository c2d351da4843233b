#!/usr/bin/env bash
# The GPU check on a lent machine that has PyTorch (CUDA), Lightning and the rest of the scientific stack but
# not this project's kornia, and no network. `make device-wheels` (here, with a network) saves the missing
# wheels in .device-wheels/; carry that folder with the working tree and run this from the repository root,
# with --output under the folder that comes back (e.g. `benchmarks/gpu_check.sh --output $OUT/gpu.md`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import kornia" 2>/dev/null; then
  if ! compgen -G ".device-wheels/*.whl" >/dev/null; then
    echo "kornia is not installed and .device-wheels/ holds no wheels: run 'make device-wheels' on a machine" \
      "with a network and carry .device-wheels/" >&2
    exit 2
  fi
  # Into a folder of its own: the machine's environment stays as it was.
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu_check_site .device-wheels/*.whl
  export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec python3 benchmarks/gpu_check.py "$@"
