"""Bad files and state dicts for save, load, convert_checkpoint and load_ae_state_dict: each raises a
CheckpointError saying what is wrong and what to do, and leaves the model (AE or VAE) bit-identical."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

import fxvae
from fxvae.io.checkpoints import DIGEST_KEY, RECIPE_KEY
from tests.snapshot import assert_unchanged, lived_in, snapshot
from tests.zoo import MLPSigmoid

X = (4, 64)


def _vae() -> torch.fx.GraphModule:
    return fxvae.convert(MLPSigmoid().eval(), torch.randn(*X))[0]


def test_saving_into_a_missing_directory_raises_and_writes_nothing(tmp_path: Path) -> None:
    vae = lived_in(_vae())
    before = snapshot(vae)
    with pytest.raises(
        fxvae.CheckpointError, match=r"^cannot save to '.*/missing/vae.safetensors': the directory '.*/missing' does "
    ) as info:
        fxvae.save(vae, tmp_path / "missing" / "vae.safetensors")
    assert str(info.value).endswith("does not exist; create it first")
    assert_unchanged(vae, before)
    assert list(tmp_path.iterdir()) == []


def _not_by_fxvae(path: Path) -> None:
    safetensors.torch.save_file(MLPSigmoid().state_dict(), path)


def _by_a_newer_fxvae(path: Path) -> None:
    fxvae.save(_vae(), path)
    tensors = safetensors.torch.load_file(path)
    with safe_open(path, framework="pt") as handle:
        metadata = {**handle.metadata(), "fxvae.format": "99", "fxvae.version": "9.0"}
    safetensors.torch.save_file(tensors, path, metadata=metadata)


def _truncated(path: Path) -> None:
    fxvae.save(_vae(), path)
    path.write_bytes(path.read_bytes()[:-100])


def _a_torch_save_file(path: Path) -> None:
    torch.save(MLPSigmoid().state_dict(), path)


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00" * 8)


FILES: dict[str, tuple[Callable[[Path], None], str]] = {
    "not_written_by_fxvae": (
        _not_by_fxvae,
        r"^'.*vae.safetensors' has no fxvae recipe in its metadata; it was not written by fxvae.save \(for an "
        r"autoencoder checkpoint use fxvae.convert_checkpoint\)$",
    ),
    "written_by_a_newer_fxvae": (
        _by_a_newer_fxvae,
        r"^'.*vae.safetensors' was written by fxvae 9.0 \(file format 99\); this fxvae .* reads formats up to 3: "
        r"upgrade fxvae \(pip install -U fxvae\)$",
    ),
    "truncated": (
        _truncated,
        r"^cannot read '.*vae.safetensors' as safetensors \(SafetensorError: .*\); is the file truncated or not a "
        r"safetensors file\? save it again with fxvae.save$",
    ),
    "a_torch_save_file": (_a_torch_save_file, r"^cannot read '.*vae.safetensors' as safetensors \(SafetensorError"),
    "eight_zero_bytes": (_garbage, r"^cannot read '.*vae.safetensors' as safetensors"),
}


@pytest.mark.parametrize("name", FILES)
def test_loading_a_bad_file_raises_a_checkpoint_error_and_leaves_the_ae_bit_identical(
    name: str, tmp_path: Path
) -> None:
    write, match = FILES[name]
    path = tmp_path / "vae.safetensors"
    write(path)
    ae = lived_in(MLPSigmoid().eval())
    before = snapshot(ae)
    with pytest.raises(fxvae.CheckpointError, match=match):
        fxvae.load(ae, path, torch.randn(*X))
    assert_unchanged(ae, before)


def _missing(sd: dict[str, torch.Tensor]) -> None:
    del sd["dec.2.bias"]


def _extra(sd: dict[str, torch.Tensor]) -> None:
    sd["head.weight"] = torch.zeros(3)


def _reshaped(sd: dict[str, torch.Tensor]) -> None:
    sd["enc.2.weight"] = sd["enc.2.weight"][:4]


STATE_DICTS: dict[str, tuple[Callable[[dict[str, torch.Tensor]], None], str]] = {
    "a_missing_key": (_missing, r"missing keys \['dec.2.bias'\], unexpected keys \[\]; is this checkpoint for this"),
    "an_extra_key": (_extra, r"missing keys \[\], unexpected keys \['head.weight'\]; is this checkpoint for this"),
    "a_reshaped_key": (
        _reshaped,
        r"shape mismatch for \['{key}: \(4, 32\) in the file, \(8, 32\) in the model'\]; is this another model size\?$",
    ),
}


@pytest.mark.parametrize("name", STATE_DICTS)
def test_convert_checkpoint_refuses_a_mismatched_checkpoint_and_leaves_the_ae_bit_identical(
    name: str, tmp_path: Path
) -> None:
    edit, match = STATE_DICTS[name]
    sd = MLPSigmoid().state_dict()
    edit(sd)
    torch.save(sd, tmp_path / "ae.pt")
    ae = lived_in(MLPSigmoid().eval())
    before = snapshot(ae)
    with pytest.raises(fxvae.CheckpointError, match=rf"^'.*ae.pt' vs MLPSigmoid: {match.format(key='enc.2.weight')}"):
        fxvae.convert_checkpoint(ae, tmp_path / "ae.pt", torch.randn(*X), out=tmp_path / "vae.safetensors")
    assert_unchanged(ae, before)
    assert [p.name for p in tmp_path.iterdir()] == ["ae.pt"]


@pytest.mark.parametrize("name", STATE_DICTS)
def test_load_ae_state_dict_refuses_a_mismatched_state_dict_and_leaves_the_vae_bit_identical(name: str) -> None:
    edit, match = STATE_DICTS[name]
    sd = MLPSigmoid().state_dict()
    edit(sd)
    vae = lived_in(_vae())
    before = snapshot(vae)
    # The bottleneck layer's keys are reported under their VAE names (mu_head.*): those are what it lacks.
    expected = rf"^the state dict vs MLPSigmoid: {match.format(key='mu_head.weight')}"
    with pytest.raises(fxvae.CheckpointError, match=expected):
        fxvae.load_ae_state_dict(vae, sd)
    assert_unchanged(vae, before)


def test_convert_checkpoint_names_a_checkpoint_that_does_not_exist(tmp_path: Path) -> None:
    ae = lived_in(MLPSigmoid().eval())
    before = snapshot(ae)
    with pytest.raises(fxvae.CheckpointError, match=r"^checkpoint '.*ae.pt' does not exist$"):
        fxvae.convert_checkpoint(ae, tmp_path / "ae.pt", torch.randn(*X))
    assert_unchanged(ae, before)


def test_convert_checkpoint_refuses_a_pickle_that_is_not_a_state_dict(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "ae.pt")
    ae = lived_in(MLPSigmoid().eval())
    before = snapshot(ae)
    expected = r"^checkpoint in '.*ae.pt' is not a state dict: \['epoch', 'optimizer'\] are not tensors"
    with pytest.raises(fxvae.CheckpointError, match=expected):
        fxvae.convert_checkpoint(ae, tmp_path / "ae.pt", torch.randn(*X))
    assert_unchanged(ae, before)


def test_a_meta_vae_refuses_a_buffer_no_state_dict_can_fill_and_stays_as_it_was() -> None:
    class WithTable(MLPSigmoid):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("table", torch.zeros(64), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x + self.table)

    with torch.device("meta"):
        meta = WithTable().eval()
    vae, _ = fxvae.convert(meta, torch.empty(*X, device="meta"))
    before = snapshot(vae)
    with pytest.raises(
        fxvae.CheckpointError, match=r"\['table'\] are on the meta device and the state dict does not fill them"
    ):
        fxvae.load_ae_state_dict(vae, WithTable().state_dict())
    assert_unchanged(vae, before)


def test_a_missing_vae_file_is_reported_as_missing(tmp_path: Path) -> None:
    ae = lived_in(MLPSigmoid().eval())
    before = snapshot(ae)
    with pytest.raises(fxvae.CheckpointError, match=r"^'.*nope.safetensors' does not exist$"):
        fxvae.load(ae, tmp_path / "nope.safetensors", torch.randn(*X))
    assert_unchanged(ae, before)


# --- damaged recipes: a seeded fuzz of every field -----------------------------------------------------------

DAMAGE: tuple[object, ...] = (0, 7, -1, 2.5, float("nan"), "", "x", "enc.0", True, [], [3, "a"], {}, {"a": 1}, [[1]])
"""Values of every JSON type, and nested wrong shapes, that a damaged recipe field may hold instead of its own."""
CALIBRATION = torch.randn(256, 64, generator=torch.Generator().manual_seed(0))
SAVED: dict[str, Callable[[], torch.fx.GraphModule]] = {
    "calibrated": lambda: fxvae.convert(MLPSigmoid().eval(), torch.randn(*X), calibration=CALIBRATION)[0],
    "vq": lambda: fxvae.convert(
        MLPSigmoid().eval(), torch.randn(*X), latent=fxvae.VQ(codebook_size=16), calibration=CALIBRATION
    )[0],
    "fsq": lambda: fxvae.convert(MLPSigmoid().eval(), torch.randn(*X), latent=fxvae.FSQ(levels=(5, 5, 5)))[0],
}


def _fields(value: object, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every field of a JSON value, records and lists included, as paths from the top."""
    found = [path] if path else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        found += _fields(inner, (*path, key))
    return found


def _damaged(recipe: str, path: tuple[str | int, ...], value: object) -> str:
    data = json.loads(recipe)
    owner = data
    for key in path[:-1]:
        owner = owner[key]
    owner[path[-1]] = value
    return json.dumps(data)


def _same_model(got: torch.nn.Module, saved: torch.nn.Module, x: torch.Tensor) -> bool:
    a, b = got.state_dict(), saved.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and torch.equal(got(x), saved(x))


def _fuzz(kind: str, tmp_path: Path, keep_digest: bool) -> list[tuple[tuple[str | int, ...], object, str]]:
    """Load the saved VAE with each field damaged (None, then one seeded value of DAMAGE): what each gave."""
    saved = SAVED[kind]().eval()
    path = tmp_path / "vae.safetensors"
    fxvae.save(saved, path)
    tensors = safetensors.torch.load_file(path)
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    if not keep_digest:
        del metadata[DIGEST_KEY]
    x = torch.randn(*X, generator=torch.Generator().manual_seed(1))
    draw = random.Random(f"{kind}-{keep_digest}")
    outcomes = []
    for field in _fields(json.loads(metadata[RECIPE_KEY])):
        for value in (None, draw.choice(DAMAGE)):
            damaged = {**metadata, RECIPE_KEY: _damaged(metadata[RECIPE_KEY], field, value)}
            safetensors.torch.save_file(tensors, tmp_path / "damaged.safetensors", metadata=damaged)
            try:
                got, _ = fxvae.load(MLPSigmoid().eval(), tmp_path / "damaged.safetensors", torch.randn(*X))
            except fxvae.CheckpointError as err:
                assert "\n" not in str(err) and "damaged.safetensors" in str(err), str(err)
                outcomes.append((field, value, "refused"))
                continue
            outcomes.append((field, value, "same" if _same_model(got.eval(), saved, x) else "another model"))
    return outcomes


@pytest.mark.parametrize("kind", SAVED)
def test_a_damaged_recipe_field_loads_the_saved_model_or_is_a_checkpoint_error(kind: str, tmp_path: Path) -> None:
    outcomes = _fuzz(kind, tmp_path, keep_digest=True)
    assert len(outcomes) > 100
    assert [o for o in outcomes if o[2] not in ("same", "refused")] == []


@pytest.mark.parametrize("kind", SAVED)
def test_a_recipe_without_its_checksum_raises_only_checkpoint_errors_when_damaged(kind: str, tmp_path: Path) -> None:
    # Files written before the checksum: each field is checked against its type, so no other exception escapes
    # (a flipped optional field may still describe another valid model, which only the checksum can tell).
    outcomes = _fuzz(kind, tmp_path, keep_digest=False)
    refused = [o for o in outcomes if o[2] == "refused"]
    assert len(refused) > 0.8 * len(outcomes)


def test_a_damaged_field_is_named_with_the_type_it_should_have(tmp_path: Path) -> None:
    fxvae.save(SAVED["calibrated"](), tmp_path / "vae.safetensors")
    tensors = safetensors.torch.load_file(tmp_path / "vae.safetensors")
    with safe_open(tmp_path / "vae.safetensors", framework="pt") as handle:
        metadata = handle.metadata()
    recipe = _damaged(metadata[RECIPE_KEY], ("calibration", "module"), ["calibration"])
    safetensors.torch.save_file(tensors, tmp_path / "vae.safetensors", metadata={**metadata, RECIPE_KEY: recipe})
    expected = (
        r"^the fxvae recipe in '.*vae.safetensors' is damaged \(the recipe's field calibration.module is "
        r"\['calibration'\], where a str belongs\); save the VAE again from its model$"
    )
    with pytest.raises(fxvae.CheckpointError, match=expected):
        fxvae.load(MLPSigmoid().eval(), tmp_path / "vae.safetensors", torch.randn(*X))
