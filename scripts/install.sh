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
        # A local wheel cache (pip's find-links) may already hold the CPU build; otherwise use PyTorch's
        # CPU-only package index.
        "${PIP[@]}" install --no-index 'torch==2.13.0' 2>/dev/null \
            || "${PIP[@]}" install 'torch>=2.4,<3' --index-url https://download.pytorch.org/whl/cpu
    else
        "${PIP[@]}" install 'torch>=2.4,<3'
    fi
fi
"${PIP[@]}" install -q -r requirements-dev.txt
