"""fxvae.compare across processes: a comparison killed with SIGKILL resumes from what it wrote, and two gloo
processes train every start with DistributedDataParallel to the numbers of one process."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

import fxvae
from tests.digits import DigitsAE
from tests.helpers import free_port, gloo_group

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = {"starts": ("warm", "scratch"), "epochs": 8, "k": 2, "final_k": 4, "likelihood": "bernoulli"}
SCRIPT = """
import sys, torch, fxvae
from tests.digits import DigitsAE
torch.set_num_threads(1)
ae = DigitsAE()
ae.load_state_dict(torch.load(sys.argv[1]))
fxvae.compare(ae.eval(), torch.load(sys.argv[2]), out=sys.argv[3], progress=False, **{options!r})
"""


def _epoch_lines(path: Path) -> int:
    if not path.exists():
        return 0
    return sum('"type": "epoch"' in line for line in path.read_text().splitlines())


def _save(ae: torch.nn.Module, data: torch.Tensor, folder: Path) -> None:
    """The AE checkpoint and the data as a command line reads them: ``ae.pt`` and ``data.pt`` in ``folder``."""
    torch.save(ae.state_dict(), folder / "ae.pt")
    torch.save(data, folder / "data.pt")


def test_a_comparison_killed_with_sigkill_keeps_its_epochs_and_resumes_to_the_same_numbers(
    trained: tuple, tmp_path: Path
) -> None:
    ae, data = trained
    _save(ae, data, tmp_path)
    (tmp_path / "run.py").write_text(SCRIPT.format(options=OPTIONS))
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(tmp_path / "run.py"), str(tmp_path / "ae.pt"), str(tmp_path / "data.pt"), str(out)]
    process = subprocess.Popen(args, env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while _epoch_lines(out / "metrics.jsonl") < 7 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = _epoch_lines(out / "metrics.jsonl")
    assert 7 <= kept < 2 * (OPTIONS["epochs"] + 1), "the run ended before it could be killed half-way"
    assert not (out / "report.md").exists()
    assert (out / ".lock").read_text().strip() == str(process.pid)  # the killed run's lock file stays ...
    torch.set_num_threads(1)
    resumed = fxvae.compare(ae, data, out=out, resume=True, progress=False, **OPTIONS)  # ... and blocks nothing
    whole = fxvae.compare(ae, data, progress=False, **OPTIONS)
    for a, b in zip(whole.runs, resumed.runs, strict=True):
        assert [p.evaluation for p in a.points] == [p.evaluation for p in b.points]
    assert (out / "report.md").exists()


WORLD = 2
DDP_OPTIONS = {"starts": ("warm", "scratch"), "epochs": 3, "k": 2, "final_k": 8, "likelihood": "bernoulli"}


def _rank(rank: int, port: int, folder: str) -> None:
    with gloo_group(rank, port, WORLD):
        ae = DigitsAE()
        ae.load_state_dict(torch.load(Path(folder) / "ae.pt"))
        data = torch.load(Path(folder) / "data.pt")
        result = fxvae.compare(ae.eval(), data, out=Path(folder) / "ddp", progress=False, **DDP_OPTIONS)
        (Path(folder) / f"rank{rank}.json").write_text(json.dumps([r.objective() for r in result.runs]))


def test_two_processes_train_each_start_with_ddp_to_the_numbers_of_one(trained: tuple, tmp_path: Path) -> None:
    ae, data = trained
    _save(ae, data, tmp_path)
    mp.spawn(_rank, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert ranks[0] == ranks[1]  # the same weights on every rank, measured on the same held-out data
    report = (tmp_path / "ddp" / "report.md").read_text()
    assert "2 process(es)" in report
    single = fxvae.compare(ae, data, seeds=3, progress=False, **DDP_OPTIONS)
    for start, curve in zip(DDP_OPTIONS["starts"], ranks[0], strict=True):
        finals = [r.objective()[-1] for r in single.of(start)]
        spread = max(statistics.stdev(finals), 0.05)
        assert abs(curve[-1] - statistics.mean(finals)) <= 3 * spread, (start, curve[-1], finals)


RACER = """
import sys, time
from pathlib import Path
from fxvae.cli import main
folder = Path(sys.argv[1])
(folder / f"ready{sys.argv[2]}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
sys.argv = ["fxvae", *sys.argv[3:]]
main()
"""


def test_two_comparisons_started_together_into_one_out_run_one_and_refuse_the_other(
    trained: tuple, tmp_path: Path
) -> None:
    _save(*trained, tmp_path)
    out = tmp_path / "report"
    command = ["compare", f"{ROOT / 'tests' / 'digits.py'}:DigitsAE", "--checkpoint", str(tmp_path / "ae.pt")]
    command += ["--data", str(tmp_path / "data.pt"), "--out", str(out), "--starts", "warm,scratch", "--quick"]
    command += ["--k", "1", "--final-k", "2", "--likelihood", "bernoulli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path), str(n), *command],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{n}").exists() for n in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both start from here, a millisecond apart at most
    ended = [(r.wait(timeout=300), *r.communicate()) for r in racers]
    assert sorted(code for code, _, _ in ended) == [0, 2], ended
    _, _, refused = next(e for e in ended if e[0] == 2)
    errors = [line for line in refused.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in refused and repr(str(out)) in errors[0], refused
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records].count("config") == 1
    assert [r["type"] for r in records].count("epoch") == 2 * 3
    assert [r["type"] for r in records].count("final") == 2
