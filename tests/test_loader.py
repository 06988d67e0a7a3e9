"""compare reads a Dataset through DataLoader workers: the same batches as in the training process, the same
augmentations for every start, a clear error when a worker fails, resumable runs, and DDP shards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset

import fxvae
from fxvae.study.loop import batch_order
from tests.digits import DigitsAE
from tests.helpers import free_port, gloo_group

ROOT = Path(__file__).resolve().parent.parent
TINY = {"starts": ("warm", "scratch"), "epochs": 2, "k": 1, "final_k": 2, "likelihood": "bernoulli"}


class Flips(Dataset):
    """The digits, each mirrored left to right on a coin flip drawn from torch's global generator."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.data[i]
        return x.view(8, 8).flip(1).flatten() if torch.rand(()) < 0.5 else x


class DiesWhenArmed(Flips):
    """Flips whose worker ends its process (no exception, no traceback) once the file ``armed`` exists."""

    def __init__(self, data: torch.Tensor, armed: Path) -> None:
        super().__init__(data)
        self.armed = armed

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.armed.exists():
            os._exit(3)
        return super().__getitem__(i)


class Raises(Flips):
    def __getitem__(self, i: int) -> torch.Tensor:
        if i == 7:
            raise ValueError("sample 7 is corrupt")
        return super().__getitem__(i)


def _epochs(samples: fxvae.study.Samples, seed: int = 0) -> list[torch.Tensor]:
    return [
        batch[0]
        for epoch in (1, 2)
        for batch in samples.stream(batch_order(len(samples), 64, seed, epoch), seed=seed, epoch=epoch)
    ]


def test_workers_give_the_batches_of_the_training_process(trained: tuple) -> None:
    _, data = trained
    inline = _epochs(fxvae.study.Samples(Flips(data), workers=0))
    loaded = _epochs(fxvae.study.Samples(Flips(data), workers=2))
    assert len(inline) == len(loaded) == 2 * 7
    assert all(torch.equal(a, b) for a, b in zip(inline, loaded, strict=True))


def test_augmentations_depend_on_the_seed_and_epoch_never_on_the_start_or_the_worker(trained: tuple) -> None:
    _, data = trained
    samples = fxvae.study.Samples(Flips(data), workers=2)
    first, again = _epochs(samples), _epochs(samples)  # two starts of seed 0, one loader
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other = _epochs(samples, seed=1)
    mirrored = torch.cat(first)[: len(data)] != data[torch.cat(batch_order(len(data), 64, 0, 1))]
    assert 0.2 < mirrored.any(1).float().mean() < 0.8  # the flips are drawn, not fixed
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    state = torch.get_rng_state()
    list(fxvae.study.Samples(Flips(data), workers=0).batches())
    assert torch.equal(state, torch.get_rng_state())  # reading draws nothing from the training's generator


def test_starts_of_one_seed_see_the_same_flips_and_two_runs_give_the_same_curves(trained: tuple) -> None:
    ae, data = trained
    inline = fxvae.compare(ae, Flips(data), progress=False, workers=0, **TINY)
    loaded = fxvae.compare(ae, Flips(data), progress=False, workers=2, **TINY)
    again = fxvae.compare(ae, Flips(data), progress=False, workers=2, **TINY)
    for a, b, c in zip(inline.runs, loaded.runs, again.runs, strict=True):
        assert [p.evaluation for p in a.points] == [p.evaluation for p in b.points] == [p.evaluation for p in c.points]


def test_tensors_are_indexed_without_a_loader(trained: tuple) -> None:
    _, data = trained
    samples = fxvae.study.Samples(data, workers=4)
    assert samples.workers == 0
    order = batch_order(len(data), 64, 0, 1)
    assert all(torch.equal(b[0], data[i]) for b, i in zip(samples.stream(order), order, strict=True))


def test_a_dataloader_given_is_read_with_its_dataset_and_its_workers(trained: tuple) -> None:
    _, data = trained
    given = DataLoader(Flips(data), batch_size=5, shuffle=True, num_workers=2)
    assert fxvae.study.Samples(given).workers == 2
    assert fxvae.study.Samples(given, workers=0).workers == 0  # workers= wins over the loader's
    assert fxvae.study.Samples(DataLoader(Flips(data))).workers == 0


def test_workers_must_be_a_count() -> None:
    with pytest.raises(fxvae.InputError, match="workers=-1 must be a whole number of loader processes"):
        fxvae.study.CompareOptions(workers=-1)


def test_a_dataset_raising_in_a_worker_is_one_line_naming_its_error(trained: tuple) -> None:
    _, data = trained
    samples = fxvae.study.Samples(Raises(data), workers=2)
    with pytest.raises(fxvae.InputError, match=r"2 DataLoader worker\(s\) failed: ValueError: sample 7 is corrupt"):
        list(samples.batches())


def test_a_dying_worker_keeps_every_finished_epoch_and_the_run_resumes(trained: tuple, tmp_path: Path) -> None:
    ae, data = trained
    armed, out = tmp_path / "armed", tmp_path / "report"
    options = {**TINY, "epochs": 3}

    def arm(record: dict) -> None:
        if record.get("epoch") == 1:
            armed.touch()

    with pytest.raises(fxvae.InputError, match=r"worker.*exited unexpectedly.*rerun with resume") as caught:
        fxvae.compare(ae, DiesWhenArmed(data, armed), out=out, progress=False, workers=2, callbacks=[arm], **options)
    assert "\n" not in str(caught.value)
    armed.unlink()
    resumed = fxvae.compare(ae, DiesWhenArmed(data, armed), out=out, resume=True, progress=False, workers=2, **options)
    whole = fxvae.compare(ae, Flips(data), progress=False, workers=0, **options)
    for a, b in zip(whole.runs, resumed.runs, strict=True):
        assert [p.evaluation for p in a.points] == [p.evaluation for p in b.points]


SCRIPT = """
import sys, torch, fxvae
from tests.digits import DigitsAE
from tests.test_loader import Flips
torch.set_num_threads(1)
ae = DigitsAE()
ae.load_state_dict(torch.load(sys.argv[1]))
fxvae.compare(ae.eval(), Flips(torch.load(sys.argv[2])), out=sys.argv[3], progress=False, workers=2, **{options!r})
"""


def _epoch_lines(path: Path) -> int:
    if not path.exists():
        return 0
    return sum('"type": "epoch"' in line for line in path.read_text().splitlines())


def test_a_run_with_workers_killed_with_sigkill_resumes_to_the_numbers_of_an_unbroken_one(
    trained: tuple, tmp_path: Path
) -> None:
    ae, data = trained
    options = {**TINY, "epochs": 6}
    torch.save(ae.state_dict(), tmp_path / "ae.pt")
    torch.save(data, tmp_path / "data.pt")
    (tmp_path / "run.py").write_text(SCRIPT.format(options=options))
    out = tmp_path / "report"
    args = [sys.executable, str(tmp_path / "run.py"), str(tmp_path / "ae.pt"), str(tmp_path / "data.pt"), str(out)]
    process = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 120
    while _epoch_lines(out / "metrics.jsonl") < 5 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # the run alone: its workers outlive it for a moment
    process.wait()
    kept = _epoch_lines(out / "metrics.jsonl")
    assert 5 <= kept < 2 * (options["epochs"] + 1), "the run ended before it could be killed half-way"
    try:  # the orphaned workers hold no lock: the folder is free at once
        resumed = fxvae.compare(ae, Flips(data), out=out, resume=True, progress=False, workers=2, **options)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    whole = fxvae.compare(ae, Flips(data), progress=False, workers=0, **options)
    for a, b in zip(whole.runs, resumed.runs, strict=True):
        assert [p.evaluation for p in a.points] == [p.evaluation for p in b.points]


WORLD = 2


def _rank(rank: int, port: int, folder: str) -> None:
    with gloo_group(rank, port, WORLD):
        ae = DigitsAE()
        ae.load_state_dict(torch.load(Path(folder) / "ae.pt"))
        data = Flips(torch.load(Path(folder) / "data.pt"))
        result = fxvae.compare(ae.eval(), data, out=Path(folder) / "ddp", progress=False, workers=1, **TINY)
        (Path(folder) / f"rank{rank}.json").write_text(json.dumps([r.objective() for r in result.runs]))


def test_two_gloo_ranks_with_workers_train_on_their_shards_and_agree(trained: tuple, tmp_path: Path) -> None:
    ae, data = trained
    torch.save(ae.state_dict(), tmp_path / "ae.pt")
    torch.save(data, tmp_path / "data.pt")
    mp.spawn(_rank, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert ranks[0] == ranks[1]
    assert "2 process(es)" in (tmp_path / "ddp" / "report.md").read_text()


class Rows(Dataset):
    """A tensor's rows, one read at a time, remembering nothing of the process that reads them."""

    def __init__(self, data: torch.Tensor) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data[i]


def test_evaluation_and_calibration_read_a_dataset_with_workers_in_data_order(monkeypatch) -> None:
    monkeypatch.setattr(fxvae.io.data, "default_workers", lambda: 2)
    data = torch.randn(600, 3)
    read = [args[0] for args in fxvae.io.data.batches(Rows(data), 1)]
    assert [len(b) for b in read] == [256, 256, 88]
    assert torch.equal(torch.cat(read), data)
