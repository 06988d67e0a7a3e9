"""The package surface: a lean import and documented public names."""

from __future__ import annotations

import subprocess
import sys

import fxvae


def test_import_fxvae_loads_no_optional_dependency() -> None:
    optional = (
        "triton",
        "onnx",
        "onnxscript",
        "onnxruntime",
        "matplotlib",
        "typer",
        "rich",
        "sympy",
        "safetensors",
        "sklearn",
        "torchmetrics",
        "tensorboard",
        "torch.utils.tensorboard",
    )
    code = f"import sys, fxvae; print(sorted(m for m in {optional!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_name_has_a_docstring_with_a_call() -> None:
    undocumented = [
        name
        for name in fxvae.__all__
        if not name.startswith("__")
        and callable(getattr(fxvae, name))
        and ">>>" not in (getattr(fxvae, name).__doc__ or "")
    ]
    assert undocumented == []
