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
# The torch probes below run before numpy is installed (torch does not require it; `pip install -e .` brings it),
# and importing torch without numpy warns "Failed to initialize NumPy": that one warning is silenced, nothing else.
probe() { "$PY" -W "ignore:Failed to initialize NumPy" -c "$@"; }
if ! probe "import torch" 2>/dev/null; then
    if [ -n "${LTH_TORCH_INDEX:-}" ]; then
        "$PY" -m pip install "torch==${LTH_TORCH_VERSION:-2.13.0}" --index-url "$LTH_TORCH_INDEX"
    else
        "$PY" -m pip install "torch==${LTH_TORCH_VERSION:-2.13.0}"
    fi
fi
if ! probe "import sys, torch; v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 4))"; then
    echo "torch $(probe 'import torch; print(torch.__version__)') is installed; lth needs torch >= 2.4 (fused Adam on" \
         "CPU). Upgrade your torch build (same CUDA index as before), or uninstall it to get torch==2.13.0." >&2
    exit 1
fi
extra=""
[ "${1:-}" = "dev" ] && extra="[dev]"
"$PY" -m pip install -e ".${extra}"
