"""Helpers the test modules share: reading the leaves of a model's output."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch
import torch.distributed as dist

from fxvae.analysis.outputs import tensors


def leaves(out: object) -> list[torch.Tensor]:
    """The tensors of an output, depth first (tuple items, dict values, dataclass fields)."""
    return list(tensors(out))


def recon(out: object) -> torch.Tensor:
    """The first tensor of an output: every zoo model returns its reconstruction first."""
    return leaves(out)[0]


def with_none(out: object) -> list[object]:
    """Output leaves in order, keeping the decoder's None where the VAE has a tensor."""
    if isinstance(out, dict):
        return [leaf for v in out.values() for leaf in with_none(v)]
    if isinstance(out, (tuple, list)):
        return [leaf for v in out for leaf in with_none(v)]
    if dataclasses.is_dataclass(out):
        return [leaf for f in dataclasses.fields(out) for leaf in with_none(getattr(out, f.name))]
    return [out]


def state_equal(a: torch.nn.Module, b: dict[str, torch.Tensor]) -> bool:
    """Whether ``a``'s state dict has exactly ``b``'s keys and bitwise equal tensors."""
    got = a.state_dict()
    return list(got) == list(b) and all(torch.equal(got[k], b[k]) for k in b)


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gloo_group(rank: int, port: int, world: int) -> Iterator[None]:
    """This process as ``rank`` of a CPU (gloo) process group of ``world`` on the loopback interface."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        yield
        # A rank that tears its group down while its peer is still inside a gloo call aborts the peer
        # ("terminate called without an active exception"): leave together.
        dist.barrier()
    finally:
        dist.destroy_process_group()


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
