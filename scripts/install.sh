#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install napari-mentalmap with its test tools.
#
#   bash scripts/install.sh            # venv in ./.venv
#   VENV=/path/to/env bash scripts/install.sh
#
# torch is installed FIRST, pinned to 2.13.0, so that the package's `torch>=2.2`
# requirement is already met and pip never pulls a multi-GB CUDA build. On a machine
# whose pip does not already provide the CPU wheel (e.g. plain PyPI on Linux), point it
# at the CPU index:  TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/install.sh
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"

if [ ! -x "$VENV/bin/python" ]; then
    echo "install: creating virtual environment $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)

if "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
    echo "install: torch $TORCH_VERSION already installed"
else
    echo "install: installing torch==$TORCH_VERSION (CPU) first"
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        "${PIP[@]}" install "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
    else
        "${PIP[@]}" install "torch==$TORCH_VERSION"
    fi
fi

echo "install: installing napari-mentalmap (editable) with test extras"
"${PIP[@]}" install -e ".[testing]"
"$VENV/bin/python" -c "import napari_mentalmap, torch; print('install: ok, torch', torch.__version__)"
