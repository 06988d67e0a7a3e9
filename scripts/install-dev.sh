#!/usr/bin/env bash
# The one install for developers and CI: fxvae with its dev and docs extras, then the third-party autoencoders that
# tests/integration converts. Run it with the Python you test with active (a venv, or PYTHON=...).
#
# Every step runs under requirements/constraints.txt (torch==2.13.0), so nothing can replace the CPU
# build of torch: an unpinned torch or torchvision resolves to a CUDA build of several GB. On a machine
# without torch, install the CPU build first: `pip install torch --index-url https://download.pytorch.org/whl/cpu`
# (.ci/run installs `torch==2.13.0`, which CI's machines hold as a local wheel).
# The zoo's packages go in with --no-deps (several declare torch, torchvision or torchaudio; the
# reachable torchvision/torchaudio wheels do not import against this torch), then what they import at run
# time, from requirements/integration-runtime.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
pip=("${PYTHON:-python}" -m pip install --quiet --constraint requirements/constraints.txt)
"${pip[@]}" -e ".[dev,docs]"
"${pip[@]}" --no-deps -r requirements/integration.txt
"${pip[@]}" -r requirements/integration-runtime.txt
