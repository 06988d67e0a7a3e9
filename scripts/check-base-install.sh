#!/usr/bin/env bash
# A user's install, checked: a clean venv gets the CPU torch wheel and `pip install .` without extras, then
# the command line and the Python API run from outside the checkout. .ci/run calls this after the tests.
#
# What it proves: numpy, click and rich are enough (core dependencies); `import fxvae` imports none of the
# optional packages; `fxvae convert` and `fxvae.save`/`fxvae.load` work; `fxvae inspect --plot` without
# matplotlib says in one line which extra to install.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
# In memory where /dev/shm has 2 GiB free: writing and deleting torch's 830 MB there takes half the time.
tmp_root=/dev/shm
free_kib="$(df -Pk "$tmp_root" 2>/dev/null | awk 'NR == 2 {print $4}')"
if [[ ! -w $tmp_root || "${free_kib:-0}" -lt 2097152 ]]; then
    tmp_root="${TMPDIR:-/tmp}"
fi
work="$(mktemp -d -p "$tmp_root")"
trap 'rm -rf "$work"' EXIT
start=$SECONDS

"${PYTHON:-python}" -m venv "$work/venv"
py="$work/venv/bin/python"
# --no-compile: nothing here needs torch's thousands of modules byte-compiled ahead of time.
pip=("$py" -m pip install --quiet --disable-pip-version-check --no-compile)
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" "$repo"
echo "base install: venv with torch and fxvae in $((SECONDS - start)) s"

cd "$work" # outside the checkout: every import below is the installed fxvae
export PATH="$work/venv/bin:$PATH"
models="$repo/tests/cli_models.py"
fxvae --help >/dev/null

"$py" - "$models" <<'PY'
import sys

import fxvae

assert fxvae.__file__.startswith(sys.prefix), f"fxvae imported from {fxvae.__file__}, not the venv"
optional = ("matplotlib", "typer", "triton", "onnx", "onnxscript", "onnxruntime")
loaded = sorted(m for m in optional if m in sys.modules)
assert not loaded, f"import fxvae imported {loaded}"

import importlib.util  # noqa: E402

import torch  # noqa: E402

spec = importlib.util.spec_from_file_location("cli_models", sys.argv[1])
models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(models)
torch.save(models.mlp_ae().state_dict(), "ae.pt")
PY

fxvae convert "$models:mlp_ae" --checkpoint ae.pt --input-shape 2,16 --out vae.safetensors

"$py" - "$models" <<'PY'
import importlib.util
import sys

import torch

import fxvae

spec = importlib.util.spec_from_file_location("cli_models", sys.argv[1])
models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(models)
x = torch.randn(2, 16)
from_cli, _ = fxvae.load(models.mlp_ae, "vae.safetensors", x)
assert fxvae.conversion(from_cli).latent_shape == (4,)
vae, kl = fxvae.convert(models.mlp_ae(), x)
fxvae.save(vae, "again.safetensors")
again, _ = fxvae.load(models.mlp_ae, "again.safetensors", x)
assert torch.equal(again.eval()(x), vae.eval()(x))
PY

set +e
message="$(fxvae inspect "$models:mlp_ae" --input-shape 2,16 --plot widths.png 2>&1)"
code=$?
set -e
expected="error: --plot needs matplotlib: pip install 'fxvae[plot]'"
if [[ $code -ne 2 || "$message" != "$expected" ]]; then
    echo "fxvae inspect --plot without matplotlib: exit code $code, printed: $message" >&2
    exit 1
fi
echo "base install: --help, convert, save/load, --plot without matplotlib: passed in $((SECONDS - start)) s"
