#!/usr/bin/env bash
# Installs lth into the active Python environment.
#   bash scripts/install.sh        # the package
#   bash scripts/install.sh dev    # plus the test tools
# A torch that is already installed (e.g. your CUDA build) is kept. Otherwise torch==2.13.0 is installed first:
# on machines that carry its CPU wheel locally pip takes that one; elsewhere set
# LTH_TORCH_INDEX=https://download.pytorch.org/whl/cpu (CPU) or a CUDA index of your choice.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c "import torch" 2>/dev/null; then
    if [ -n "${LTH_TORCH_INDEX:-}" ]; then
        "$PY" -m pip install "torch==${LTH_TORCH_VERSION:-2.13.0}" --index-url "$LTH_TORCH_INDEX"
    else
        "$PY" -m pip install "torch==${LTH_TORCH_VERSION:-2.13.0}"
    fi
fi
extra=""
[ "${1:-}" = "dev" ] && extra="[dev]"
"$PY" -m pip install -e ".${extra}"
