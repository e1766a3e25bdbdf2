#!/usr/bin/env bash
# Create a virtual environment in .venv (or $VENV) and install the dependencies.
# PyTorch comes first: the CUDA build where an NVIDIA GPU is present, the CPU-only build on other Linux
# machines (several GB smaller), and PyPI's build on macOS, which supports the CPU and MPS.
set -euo pipefail

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "error: $PYTHON is missing or older than Python 3.10; install Python 3.10+ or set PYTHON=/path/to/python3" >&2
    exit 1
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "${PIP[@]}" install 'torch>=2.4,<3'
    elif [ "$(uname -s)" = "Linux" ]; then
        # 'torch==2.13.0+cpu' names the CPU-only build. PyPI has no such file, so where no local wheel
        # cache provides it, pip fails at once and PyTorch's CPU-only index is used instead.
        if ! "${PIP[@]}" install 'torch==2.13.0+cpu' 2>/dev/null; then
            echo "no local CPU build of torch 2.13.0; installing from PyTorch's CPU-only index"
            "${PIP[@]}" install 'torch>=2.4,<3' --index-url https://download.pytorch.org/whl/cpu
        fi
    else
        "${PIP[@]}" install 'torch>=2.4,<3'
    fi
fi
"${PIP[@]}" install -q -r requirements-dev.txt
