"""benchmarks/gpu_check.py, the one-command GPU check, run here on CPU through its --smoke mode."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # The script sets TRITON_INTERPRET itself for --smoke; an inherited value must not decide for it.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )


def _load(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is made.
    monkeypatch.setitem(sys.modules, "gpu_check", module)
    spec.loader.exec_module(module)
    return module


@needs_triton
def test_smoke_mode_runs_every_check_and_prints_one_table() -> None:
    proc = _run("--smoke", "--peak-gbps", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    checks = [row.split(" | ")[0] for row in rows]
    assert checks[:2] == [
        "| Triton vs torch backend: loss and gradients",
        "| Triton vs torch backend: loss at N=2^12 float32",
    ]
    assert rows[0].endswith("| 96/96 cases agree | all | ok |")
    assert [c.split(",")[0] for c in checks[2:5]] == [
        "| forward bandwidth",
        "| backward bandwidth",
        "| forward + backward vs eager formula",
    ]
    assert checks[5:7] == [
        "| conv_ae eval batch 1: VAE/AE samples/s",
        "| conv_ae train batch 1: VAE/AE samples/s",
    ]
    # compare's loop on a PNG folder; --smoke skips compile (and says so) and reads with 2 workers.
    assert "compare's loop: compile=True skipped in --smoke" in proc.stdout
    runs = ("fp32", "bf16", "fp16", "workers=2")
    assert checks[7:] == [
        *(f"| compare {run}: final -ELBO finite" for run in runs),
        "| compare bf16 vs fp32: final -ELBO",
        "| compare fp16 vs fp32: final -ELBO",
        "| compare workers=2 vs 0: curve and final -ELBO",
        *(f"| compare {run}: steps/s vs fp32" for run in runs[:3]),
        "| compare workers=2: steps/s vs workers=0 (fp32)",
    ]
    assert all(row.endswith("| ok |") for row in rows[7:12])
    assert rows[13].endswith("| identical | identical | ok |")
    assert all(row.endswith(("| ok |", "| met |", "| missed |")) for row in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_exits_2_with_one_line() -> None:
    proc = _run()
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "gpu_check.py needs a CUDA device and torch sees none; --smoke runs it on CPU"
    ]


@needs_triton
def test_only_a_correctness_failure_makes_the_exit_status_nonzero(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_check = _load(monkeypatch)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--smoke"])
    monkeypatch.setattr(sys, "path", list(sys.path))
    missed = gpu_check.Row("speed-up", "1x", ">= 3x", "target", False)
    monkeypatch.setattr(gpu_check, "bandwidth_rows", lambda plan, peak: [missed])
    monkeypatch.setattr(gpu_check, "model_rows", lambda plan: [])
    monkeypatch.setattr(gpu_check, "loop_rows", lambda plan: [])
    for agree, status in ((True, 0), (False, 1)):
        row = gpu_check.Row("backends agree", "", "all", "correctness", agree)
        monkeypatch.setattr(gpu_check, "correctness_row", lambda plan, row=row: row)
        assert gpu_check.main() == status


def test_compare_loop_checks_fail_on_workers_that_change_the_curve(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_check = _load(monkeypatch)

    def run(curve: list[float], steps_per_s: float = 10.0) -> SimpleNamespace:
        points = [SimpleNamespace(objective=v) for v in curve]
        return SimpleNamespace(
            points=points, final_objective=curve[-1], objective=lambda: curve, steps_per_s=steps_per_s
        )

    loop = gpu_check.SMOKE.loop
    same = {"fp32": run([40.0, 30.0]), "bf16": run([40.0, 30.1]), "fp16": run([40.0, 36.0])}
    ok = gpu_check.loop_checks({**same, "workers=2": run([40.0, 30.0], 20.0)}, loop)
    assert all(r.ok for r in ok if r.kind == "correctness")
    assert ok[-1].value == "2.00x (20.0 steps/s)"
    # fp16 18% above fp32 is a missed target, not a failed check: its scaler skips its first steps.
    assert [(r.kind, r.ok) for r in ok if r.check == "compare fp16 vs fp32: final -ELBO"] == [("target", False)]
    changed = gpu_check.loop_checks({**same, "workers=2": run([40.0, 30.000001])}, loop)
    failed = [r.check for r in changed if r.kind == "correctness" and not r.ok]
    assert failed == ["compare workers=2 vs 0: curve and final -ELBO"]
