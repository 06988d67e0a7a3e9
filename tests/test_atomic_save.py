"""A save killed mid-write (SIGKILL, no cleanup runs) leaves the previous file at the path intact."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import fxvae

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 7168
"""A 7168 x 7168 layer: the VAE file is 206 MB, so a write takes long enough to be caught midway."""
ATTEMPTS = 4

_SAVER = """
import sys
import torch
torch.set_num_threads(1)
from tests.test_atomic_save import WIDTH, big_ae
import fxvae

vae, _ = fxvae.convert(big_ae(), torch.zeros(2, WIDTH), copy=False)
fxvae.save(vae, sys.argv[1])
print("saved", flush=True)
for line in sys.stdin:  # one new version of the weights per request, each saved over the last
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(1.0)
    fxvae.save(vae, sys.argv[1])
    print("saved", flush=True)
"""


def big_ae(*, fill: bool = True) -> nn.Module:
    """A 51M-parameter AE without the cost of random initialisation: every weight is 0.001 (or left
    uninitialised where only the architecture matters)."""
    with torch.device("meta"):
        ae = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 16), nn.Tanh(), nn.Linear(16, WIDTH))
    ae.to_empty(device="cpu")
    if fill:
        with torch.no_grad():
            for p in ae.parameters():
                p.fill_(0.001)
    return ae.eval()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _kill_while_growing(child: subprocess.Popen[str], directory: Path, target: Path, full_size: int) -> bool:
    """SIGKILL ``child`` once a temporary file next to ``target`` is being filled; False if the save ended
    first. safetensors sizes its file up front, so growth shows in the allocated blocks, not the size."""
    last = 0
    while child.poll() is None:
        for entry in os.scandir(directory):
            if entry.name == target.name:
                continue
            try:
                written = entry.stat().st_blocks * 512
            except FileNotFoundError:
                continue
            if 0 < last < written < full_size * 0.9:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
                return True
            last = max(last, written)
        time.sleep(0.0005)
    return False


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_save_killed_mid_write_leaves_the_previous_file_intact_and_loadable(tmp_path: Path) -> None:
    target = tmp_path / "vae.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "saved"
        killed = False
        for _ in range(ATTEMPTS):
            # A save that finished before the kill replaced the file whole: take it as the new "previous".
            previous, size = _digest(target), target.stat().st_size
            child.stdin.write("again\n")
            child.stdin.flush()
            killed = _kill_while_growing(child, tmp_path, target, size)
            if killed:
                break
            assert child.stdout.readline().strip() == "saved"
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert killed, f"no save could be caught mid-write in {ATTEMPTS} attempts"
    assert child.returncode == -signal.SIGKILL
    assert size > 200_000_000
    assert _digest(target) == previous
    # Leftovers are temporary files only (hidden, never at the path), which a later save does not reuse.
    assert all(p.name.startswith(".") for p in tmp_path.iterdir() if p != target)
    vae, _ = fxvae.load(big_ae(fill=False), target, torch.zeros(2, WIDTH))
    assert vae.get_parameter("mu_head.weight").shape == (16, WIDTH)
