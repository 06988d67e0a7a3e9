"""MODEL: the factory a command names (``package.module:factory`` or ``path/to/file.py:factory``), the model it
returns, and the checkpoints loaded into it."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from fxvae.cli.errors import CliError, ExitCode
from fxvae.io.checkpoints import RECIPE_KEY, check_fits, read_state_dict


def load_factory(spec: str) -> Callable[[], Any]:
    """The callable named by ``package.module:factory`` or ``path/to/file.py:factory``.

    >>> type(load_factory("tests/cli_models.py:mlp_ae")()).__name__
    'Sequential'
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise CliError(ExitCode.USAGE, f"MODEL {spec!r} must be 'package.module:factory' or 'path/to/file.py:factory'")
    if module_name.endswith(".py") or "/" in module_name:
        module = _import_file(Path(module_name))
    else:
        # Console scripts do not put the working directory on sys.path; `python -m` does. Do the same.
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(module_name)
        except Exception as err:
            raise CliError(ExitCode.MODEL, f"cannot import module {module_name!r}: {err}") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise CliError(ExitCode.MODEL, f"{module_name!r} has no callable {attr!r}; callables there: {', '.join(found)}")
    return factory


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise CliError(ExitCode.MODEL, f"model file {str(path)!r} does not exist")
    name = f"_fxvae_factory_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CliError(ExitCode.MODEL, f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    # dataclasses and pickling look the module up by name while it executes.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise CliError(ExitCode.MODEL, f"cannot import {str(path)!r}: {type(err).__name__}: {err}") from err
    return module


def load_model(spec: str) -> nn.Module:
    """Call the factory named by ``spec`` and check that it returns an nn.Module.

    >>> load_model("fxvae.examples:mlp_ae")[0]
    Linear(in_features=16, out_features=8, bias=True)
    """
    factory = load_factory(spec)
    try:
        model = factory()
    except Exception as err:
        raise CliError(ExitCode.MODEL, f"factory {spec!r} raised {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise CliError(ExitCode.MODEL, f"factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_checkpoint_into(model: nn.Module, path: Path) -> list[str]:
    """Load ``path`` (safetensors or torch pickle) into ``model``; returns fxvae.io.checkpoints's notes on the file.

    A file that does not fit is one line: the missing and unexpected keys, or the mismatched shapes, summarised.

    >>> torch.save(ae.state_dict(), tmp / "ae.pt")
    >>> load_checkpoint_into(ae, tmp / "ae.pt")
    []
    """
    state_dict, notes = read_state_dict(path)
    check_fits(state_dict, model.state_dict(), f"checkpoint {str(path)!r} does not fit {type(model).__name__}")
    model.load_state_dict(state_dict)
    return notes


def is_vae_file(path: Path) -> bool:
    """Whether ``path`` is a VAE that fxvae.save wrote (a safetensors file with an fxvae recipe).

    >>> fxvae.save(vae, tmp / "vae.safetensors")
    >>> is_vae_file(tmp / "vae.safetensors"), is_vae_file(tmp / "ae.pt")
    (True, False)
    """
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return RECIPE_KEY in (handle.metadata() or {})
    except Exception:  # unreadable: fxvae.load names the problem
        return True
