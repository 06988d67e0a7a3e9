"""The runnable examples, on a tiny budget, so that they cannot rot."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` by path: examples are scripts, not a package."""
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolve string annotations through sys.modules, so the module must be registered first.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_compare_ae_vae_writes_report_figures_and_finite_metrics(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    pytest.importorskip("rich")
    example = load_example("compare_ae_vae")

    argv = ["--out", str(tmp_path), "--seeds", "1", "--epochs", "2", "--ae-epochs", "1", "--max-steps", "2"]
    report = example.main([*argv, "--quiet"])

    for figure in ("curves", "terms", "recon", "samples"):
        assert (tmp_path / f"compare_{figure}.png").stat().st_size > 0
    text = report.read_text()
    assert "## Final held-out metrics" in text
    assert re.search(r"\b(nan|inf)\b", text) is None
    curves = json.loads((tmp_path / "metrics.json").read_text())
    vae_runs = [c for c in curves if c["name"] != "AE"]
    assert len(vae_runs) == 8  # warm / scratch x two log-sigma inits x two KL schedules
    for curve in vae_runs:
        assert len(curve["neg_elbo"]) == 3  # before training, then one entry per epoch
        assert all(math.isfinite(v) for v in curve["neg_elbo"] + curve["recon"] + curve["kl"])
