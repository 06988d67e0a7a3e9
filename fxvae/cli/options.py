"""The options several commands share (MODEL, ``--input-shape``, ``--threads``, ``--json``, ``--debug``), click
options made from the fields of fxvae's option dataclasses (:class:`fxvae.Options`,
:class:`fxvae.study.CompareOptions`), and the checks of option values that commands share."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import fxvae
from fxvae.cli.errors import CliError, ExitCode
from fxvae.latents.configs import CONFIGS

DEFAULT_THREADS = 1
"""torch threads for ``bench``: on 2 shared cores one epoch of a small MLP took 11.8 s with torch's default
2 threads under load and 0.41 s with 1 (docs/benchmarks.md); pass more for large models on idle machines."""

model_argument = click.argument("model", metavar="MODEL")
input_shape_option = click.option(
    "--input-shape", required=True, metavar="SHAPE", help="Example input shape, batch first: 1,3,64,64."
)
debug_option = click.option("--debug", is_flag=True, help="Show the traceback of an error.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=DEFAULT_THREADS,
    show_default=True,
    help="torch threads; 1 is steadier and faster for small models on a busy machine.",
)


def conversion_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Click options for :class:`fxvae.Options` (all its fields, or those named), passed on as one ``options``
    argument: ``--latent`` names the family, and every latent config's fields are options of their own
    (``--log-sigma-init``, ``--codebook-size``, ``--levels``...). Types, defaults and help are declared once, on
    the dataclasses; a field of another family than ``--latent``'s, set away from its default, is refused.

    >>> @click.command()
    ... @conversion_options("bottleneck")
    ... def show(options: fxvae.Options) -> None:
    ...     print(options.bottleneck)
    >>> show(["--bottleneck", "enc.fc2"], standalone_mode=False)
    enc.fc2
    """
    plain = [f for f in dataclasses.fields(fxvae.Options) if f.name != "latent" and (not names or f.name in names)]
    configs = list(CONFIGS.values()) if not names or "latent" in names else []
    family_fields = [(config, f) for config in configs for f in dataclasses.fields(config)]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            chosen = {f.name: kwargs.pop(f.name) for f in plain}
            if configs:
                family = CONFIGS[kwargs.pop("latent")]
                given = {f.name: kwargs.pop(f.name) for _, f in family_fields}
                for config, f in family_fields:
                    if config is not family and given[f.name] != f.default:
                        raise click.UsageError(
                            f"{_flag(f.name)} applies to --latent {config.family}, and this conversion "
                            f"makes --latent {family.family}: leave it out"
                        )
                try:
                    chosen["latent"] = family(**{f.name: given[f.name] for f in dataclasses.fields(family)})
                except fxvae.InputError as err:
                    message = str(err)
                    for f in dataclasses.fields(family):
                        message = message.replace(f"{f.name}=", f"{_flag(f.name)} ")
                    raise click.UsageError(message) from err
            return command(options=fxvae.Options(**chosen), **kwargs)

        hints = typing.get_type_hints(fxvae.Options)
        for config, f in reversed(family_fields):
            wrapper = _field_option(f, typing.get_type_hints(config)[f.name])(wrapper)
        if configs:
            wrapper = click.option(
                "--latent",
                type=click.Choice(list(CONFIGS)),
                default="gaussian",
                show_default=True,
                help="What the latent becomes: gaussian (a VAE), vq (a VQ-VAE; needs calibration data for its "
                "k-means codebook) or fsq (finite scalar quantisation). The options marked VQ: or FSQ: are theirs.",
            )(wrapper)
        for f in reversed(plain):
            wrapper = _field_option(f, hints[f.name])(wrapper)
        return wrapper

    return decorate


def dataclass_options(
    cls: type, *names: str, into: str = "options"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Click options for the fields of the dataclass ``cls`` (all, or those named), passed on as one ``cls``
    instance in the argument ``into``; the fields' types, defaults and ``metadata["help"]`` make the options."""
    fields = [f for f in dataclasses.fields(cls) if not names or f.name in names]
    hints = typing.get_type_hints(cls)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            chosen = {f.name: kwargs.pop(f.name) for f in fields}
            return command(**{into: cls(**chosen)}, **kwargs)

        for field in reversed(fields):
            wrapper = _field_option(field, hints[field.name])(wrapper)
        return wrapper

    return decorate


class _NumberOr(click.ParamType):
    """A float, or one of the named values (``--log-sigma-init auto``)."""

    name = "number"

    def __init__(self, words: tuple[str, ...]) -> None:
        self.words = words
        self.name = f"float|{'|'.join(words)}"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.words or isinstance(value, float):
            return value
        try:
            return float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor one of {', '.join(self.words)}", param, ctx)


class _Ints(click.ParamType):
    """Comma-separated integers, as a tuple (``--levels 8,5,5,5``)."""

    name = "n,n"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(int(v) for v in str(value).replace(" ", "").split(","))
        except ValueError:
            self.fail(f"{value!r} is not comma-separated integers, e.g. 8,5,5,5", param, ctx)


class _Words(click.ParamType):
    """Comma-separated names, each one of ``choices``, as a tuple (``--starts scratch,warm,ae``)."""

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices
        self.name = ",".join(choices)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        words = tuple(w for w in str(value).replace(" ", "").split(",") if w)
        unknown = [w for w in words if w not in self.choices]
        if unknown or not words:
            self.fail(f"{value!r}: each must be one of {', '.join(self.choices)}", param, ctx)
        return words


def _click_type(hint: Any) -> click.ParamType:
    """The click type of an options field: its type hint, None, Literal values and tuples (of ints, or of
    Literal names) included."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return click.Choice([str(a) for a in args])
    if typing.get_origin(hint) is tuple:
        item = args[0] if args else int
        return _Words(typing.get_args(item)) if typing.get_origin(item) is typing.Literal else _Ints()
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        words = tuple(w for a in args if typing.get_origin(a) is typing.Literal for w in typing.get_args(a))
        plain = [a for a in args if typing.get_origin(a) is not typing.Literal]
        if words:
            return _NumberOr(words)
        return _click_type(plain[0])
    return {str: click.STRING, float: click.FLOAT, int: click.INT}[hint]


def parse_ints(text: str, option: str) -> tuple[int, ...]:
    """``"1,3,64,64"`` -> ``(1, 3, 64, 64)``; every entry must be a positive integer.

    >>> parse_ints("1, 3,64,64", "--input-shape")
    (1, 3, 64, 64)
    """
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise CliError(ExitCode.USAGE, f"{option} {text!r} must be comma-separated positive integers, e.g. 1,3,64,64")
    return values


def check_output(path: Path | None, force: bool, option: str) -> None:
    """Refuse (USAGE) an output file that exists without ``--force``, or whose folder does not exist.

    >>> check_output(tmp / "vae.safetensors", force=False, option="--out")
    """
    if path is None:
        return
    if path.exists() and not force:
        raise CliError(ExitCode.USAGE, f"{str(path)!r} exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise CliError(ExitCode.USAGE, f"{option}: directory {str(path.parent)!r} of {str(path)!r} does not exist")


def _field_option(field: dataclasses.Field[Any], hint: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click option of one dataclass field: ``--name`` (``--name/--no-name`` for a flag)."""
    flag = _flag(field.name)
    if hint is bool:
        return click.option(
            f"{flag}/--no-{flag[2:]}", field.name, default=field.default, show_default=True, help=field.metadata["help"]
        )
    kind = _click_type(hint)
    # A tuple default is given as it is typed, so that the help shows 8,5,5,5.
    default = ",".join(map(str, field.default)) if isinstance(field.default, tuple) else field.default
    return click.option(
        flag,
        field.name,
        type=kind,
        default=default,
        show_default=default is not None,
        metavar=None
        if isinstance(kind, click.Choice)
        else kind.name
        if isinstance(kind, _Words)
        else kind.name.upper(),
        help=field.metadata["help"],
    )


def _metavar(kind: click.ParamType) -> str | None:
    if isinstance(kind, click.Choice):
        return None
    return kind.name if isinstance(kind, _Words) else kind.name.upper()


def _flag(name: str) -> str:
    """The command-line option of a dataclass field: ``log_sigma_init`` -> ``--log-sigma-init``."""
    return f"--{name.replace('_', '-')}"
