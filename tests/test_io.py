"""fxvae.save / fxvae.load / fxvae.convert_checkpoint / fxvae.io.checkpoints.read_state_dict."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import safe_open
from torch import nn

import fxvae
from fxvae.io.checkpoints import read_state_dict
from tests.helpers import leaves
from tests.zoo import ZOO, ZooEntry, build

BATCH = 4
BY_NAME = {e.name: e for e in ZOO}
MLP = BY_NAME["mlp_sigmoid"]


def _trained_vae(entry: ZooEntry) -> torch.fx.GraphModule:
    vae, kl = fxvae.convert(build(entry), entry.inputs(BATCH), log_sigma_init=-1.5)
    vae.train()
    opt = torch.optim.SGD(vae.parameters(), lr=0.05)
    loss = sum(t.pow(2).mean() for t in leaves(vae(*entry.inputs(BATCH))) if t.is_floating_point()) + kl()
    loss.backward()
    opt.step()
    return vae


@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_save_then_load_is_bit_exact(entry: ZooEntry, tmp_path: Path) -> None:
    vae = _trained_vae(entry)
    fxvae.save(vae, tmp_path / "vae.safetensors")
    loaded, _ = fxvae.load(build(entry, seed=3), tmp_path / "vae.safetensors", entry.inputs(BATCH))
    expected, got = vae.state_dict(), loaded.state_dict()
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert fxvae.conversion(loaded).log_sigma_init == -1.5


def test_saved_metadata_records_the_recipe(tmp_path: Path) -> None:
    vae, _ = fxvae.convert(build(MLP), MLP.inputs(BATCH), log_sigma_init=-1.0)
    fxvae.save(vae, tmp_path / "vae.safetensors")
    with safe_open(tmp_path / "vae.safetensors", framework="pt") as handle:
        metadata = handle.metadata()
    recipe = fxvae.Conversion.from_json(metadata["fxvae.recipe"])
    assert recipe == fxvae.conversion(vae)
    assert (recipe.bottleneck.node, recipe.bottleneck.layer, recipe.latent_shape) == ("enc_3", "enc.2", (8,))
    assert recipe.options == fxvae.Options(latent=fxvae.Gaussian(log_sigma_init=-1.0))
    assert metadata["torch.version"] == torch.__version__ and metadata["fxvae.version"] == fxvae.__version__


class TiedConv(nn.Module):
    """A conv AE whose decoder reuses the bottleneck conv's weight (same shape, same Parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 2, 4, stride=2, padding=1)
        self.dec = nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1)
        self.dec.weight = self.enc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.enc(x))


def test_tied_tensors_are_saved_once_and_restored_as_aliases(tmp_path: Path) -> None:
    x = torch.randn(2, 3, 8, 8)
    vae, _ = fxvae.convert(TiedConv(), x)
    fxvae.save(vae, tmp_path / "vae.safetensors")
    with safe_open(tmp_path / "vae.safetensors", framework="pt") as handle:
        aliases = json.loads(handle.metadata()["fxvae.aliases"])
        stored = set(handle.keys())
    assert aliases == {"mu_head.weight": "dec.weight"}
    assert "mu_head.weight" not in stored
    loaded, _ = fxvae.load(TiedConv(), tmp_path / "vae.safetensors", x)
    assert loaded.get_parameter("mu_head.weight") is loaded.get_parameter("dec.weight")


def test_a_tied_ae_through_convert_checkpoint_and_load_is_the_same_vae(tmp_path: Path) -> None:
    tied = BY_NAME["tied_weights"]
    torch.save(build(tied, seed=1).state_dict(), tmp_path / "ae.pt")
    made, _ = fxvae.convert_checkpoint(
        build(tied), tmp_path / "ae.pt", tied.inputs(BATCH), out=tmp_path / "v.safetensors"
    )
    loaded, _ = fxvae.load(build(tied), tmp_path / "v.safetensors", tied.inputs(BATCH))
    assert list(loaded.state_dict()) == list(made.state_dict())
    x = tied.inputs(BATCH)[0]
    assert torch.equal(loaded.eval()(x), made.eval()(x))
    assert loaded.get_parameter("mu_head.weight") is loaded.get_submodule("mu_head").weight


def test_a_file_from_a_newer_fxvae_is_refused(tmp_path: Path) -> None:
    vae, _ = fxvae.convert(build(MLP), MLP.inputs(BATCH))
    fxvae.save(vae, tmp_path / "vae.safetensors")
    tensors = safetensors.torch.load_file(tmp_path / "vae.safetensors")
    with safe_open(tmp_path / "vae.safetensors", framework="pt") as handle:
        metadata = {**handle.metadata(), "fxvae.format": "99", "fxvae.version": "9.0"}
    safetensors.torch.save_file(tensors, tmp_path / "new.safetensors", metadata=metadata)
    with pytest.raises(fxvae.CheckpointError, match=r"written by fxvae 9.0 \(file format 99\).*upgrade fxvae"):
        fxvae.load(build(MLP), tmp_path / "new.safetensors", MLP.inputs(BATCH))


def test_a_format_3_file_written_before_the_fold_field_loads_as_fold_true_bit_exactly(tmp_path: Path) -> None:
    ae = build(BY_NAME["conv_flat_linear"])
    x = BY_NAME["conv_flat_linear"].inputs(BATCH)
    vae, _ = fxvae.convert(ae, x, calibration=BY_NAME["conv_flat_linear"].inputs(64)[0])
    fxvae.save(vae, tmp_path / "vae.safetensors")
    tensors = safetensors.torch.load_file(tmp_path / "vae.safetensors")
    with safe_open(tmp_path / "vae.safetensors", framework="pt") as handle:
        metadata = handle.metadata()
    recipe = json.loads(metadata["fxvae.recipe"])
    del recipe["options"]["fold"]
    text = json.dumps(recipe)
    metadata = {**metadata, "fxvae.recipe": text, "fxvae.recipe.sha256": hashlib.sha256(text.encode()).hexdigest()}
    safetensors.torch.save_file(tensors, tmp_path / "old.safetensors", metadata=metadata)
    loaded, _ = fxvae.load(build(BY_NAME["conv_flat_linear"], seed=5), tmp_path / "old.safetensors", x)
    assert fxvae.conversion(loaded).options.latent.fold is True
    assert fxvae.conversion(loaded).calibration == fxvae.conversion(vae).calibration
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in vae.state_dict().items())
    with torch.no_grad():
        assert torch.equal(loaded.eval()(*x), vae.eval()(*x))


def test_load_accepts_a_factory(tmp_path: Path) -> None:
    vae, _ = fxvae.convert(build(MLP), MLP.inputs(BATCH))
    fxvae.save(vae, tmp_path / "vae.safetensors")
    loaded, kl = fxvae.load(MLP.build, tmp_path / "vae.safetensors", MLP.inputs(BATCH))
    x = MLP.inputs(BATCH)[0]
    assert torch.equal(loaded.eval()(x), vae.eval()(x)) and isinstance(kl, fxvae.KLDivergence)


def test_interrupted_save_leaves_the_previous_file_intact(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "vae.safetensors"
    vae, _ = fxvae.convert(build(MLP), MLP.inputs(BATCH))
    fxvae.save(vae, path)
    before = path.read_bytes()

    def fail_midway(tensors, filename, metadata=None) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        fxvae.save(vae, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["vae.safetensors"]


def test_truncated_file_raises_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "vae.safetensors"
    vae, _ = fxvae.convert(build(MLP), MLP.inputs(BATCH))
    fxvae.save(vae, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(fxvae.CheckpointError, match="truncated"):
        fxvae.load(build(MLP), path, MLP.inputs(BATCH))


def test_loading_into_another_architecture_names_the_keys(tmp_path: Path) -> None:
    tup = BY_NAME["tuple_output"]
    vae, _ = fxvae.convert(build(tup), tup.inputs(BATCH))
    fxvae.save(vae, tmp_path / "vae.safetensors")
    other = nn.Sequential(nn.Linear(20, 4), nn.Tanh(), nn.Linear(4, 20))
    with pytest.raises(
        fxvae.CheckpointError,
        match=r"missing keys \['0.weight', '0.bias', '2.weight', '2.bias'\], unexpected keys \['dec.bias'",
    ):
        fxvae.load(other, tmp_path / "vae.safetensors", tup.inputs(BATCH))


def test_loading_into_another_size_names_the_shape_mismatch(tmp_path: Path) -> None:
    small = nn.Sequential(nn.Linear(8, 2), nn.Linear(2, 8))
    vae, _ = fxvae.convert(nn.Sequential(nn.Linear(8, 3), nn.Linear(3, 8)), torch.randn(2, 8))
    fxvae.save(vae, tmp_path / "vae.safetensors")
    with pytest.raises(fxvae.CheckpointError, match="latent shape"):
        fxvae.load(small, tmp_path / "vae.safetensors", torch.randn(2, 8))


def test_a_file_not_written_by_fxvae_is_refused(tmp_path: Path) -> None:
    safetensors.torch.save_file(build(MLP).state_dict(), tmp_path / "ae.safetensors")
    with pytest.raises(fxvae.CheckpointError, match="convert_checkpoint"):
        fxvae.load(build(MLP), tmp_path / "ae.safetensors", MLP.inputs(BATCH))


@pytest.mark.parametrize(
    ("wrap", "notes"),
    [
        (lambda sd: sd, []),
        (lambda sd: {"state_dict": sd, "epoch": 3}, ["took checkpoint['state_dict']"]),
        (
            lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}},
            ["took checkpoint['model']", "stripped key prefix 'module.'"],
        ),
        (lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()}, ["stripped key prefix '_orig_mod.'"]),
        (lambda sd: {"ema": sd, "optimizer": {"lr": 0.1}}, ["took checkpoint['ema']"]),
    ],
    ids=["plain", "state_dict", "model+ddp", "compiled", "ema"],
)
def test_read_state_dict_unwraps_nesting_and_prefixes(wrap, notes, tmp_path: Path) -> None:
    sd = build(MLP).state_dict()
    torch.save(wrap(sd), tmp_path / "ae.pt")
    got, got_notes = read_state_dict(tmp_path / "ae.pt")
    assert got_notes == notes
    assert list(got) == list(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def test_read_state_dict_refuses_a_non_state_dict(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "ae.pt")
    with pytest.raises(fxvae.CheckpointError, match=r"\['epoch', 'lr'\] are not tensors"):
        read_state_dict(tmp_path / "ae.pt")


def test_a_vae_file_read_as_an_autoencoder_checkpoint_is_named_with_what_reads_it(tmp_path: Path) -> None:
    vae, _ = fxvae.convert(build(MLP), MLP.inputs(BATCH))
    fxvae.save(vae, tmp_path / "vae.safetensors")
    expected = (
        r"^'.*vae.safetensors' is a VAE that fxvae.save wrote, not an autoencoder checkpoint: read it with "
        r"fxvae.load\(model, '.*vae.safetensors', example\) or `fxvae evaluate .*vae.safetensors --model MODEL"
    )
    with pytest.raises(fxvae.CheckpointError, match=expected):
        fxvae.convert_checkpoint(build(MLP), tmp_path / "vae.safetensors", MLP.inputs(BATCH))


def test_a_pickled_whole_model_is_one_line_naming_its_class_without_escape_codes(tmp_path: Path) -> None:
    torch.save(build(MLP), tmp_path / "whole.pt")
    with pytest.raises(fxvae.CheckpointError) as info:
        read_state_dict(tmp_path / "whole.pt")
    message = str(info.value)
    assert message.startswith(f"checkpoint '{tmp_path / 'whole.pt'}' holds a pickled tests.zoo.MLPSigmoid")
    assert "torch.save(model.state_dict(), path)" in message
    assert "\x1b" not in message and "\n" not in message


def test_many_missing_keys_are_counted_after_the_first_five(tmp_path: Path) -> None:
    deep = nn.Sequential(*[nn.Linear(4, 4) for _ in range(6)])
    torch.save({"x": torch.zeros(1)}, tmp_path / "ae.pt")
    expected = (
        r"missing keys \['0.weight', '0.bias', '1.weight', '1.bias', '2.weight'\] and 7 more, "
        r"unexpected keys \['x'\]; is this checkpoint for this architecture\?$"
    )
    with pytest.raises(fxvae.CheckpointError, match=expected):
        fxvae.convert_checkpoint(deep, tmp_path / "ae.pt", torch.randn(2, 4))


def test_read_state_dict_refuses_an_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "ae.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(fxvae.CheckpointError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "ae.pt")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_convert_checkpoint_loads_converts_and_saves(suffix: str, tmp_path: Path, caplog) -> None:
    trained = build(MLP, seed=1)
    checkpoint = tmp_path / f"ae{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, checkpoint)
    else:
        safetensors.torch.save_file(trained.state_dict(), checkpoint)
    blank = build(MLP, seed=0)
    before = {k: v.clone() for k, v in blank.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="fxvae"):
        vae, _ = fxvae.convert_checkpoint(
            blank, checkpoint, MLP.inputs(BATCH), out=tmp_path / "vae.safetensors", log_sigma_init=-2.0
        )
    x = MLP.inputs(BATCH)[0]
    assert torch.equal(vae.eval()(x), trained(x))
    assert all(torch.equal(v, before[k]) for k, v in blank.state_dict().items())
    assert (suffix == ".pt") == ("stripped key prefix 'module.'" in caplog.text)
    loaded, _ = fxvae.load(build(MLP), tmp_path / "vae.safetensors", MLP.inputs(BATCH))
    assert torch.equal(loaded.eval()(x), trained(x)) and fxvae.conversion(loaded).log_sigma_init == -2.0


def test_convert_checkpoint_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    sd = build(MLP).state_dict()
    sd["extra.weight"] = sd.pop("dec.2.weight")
    torch.save(sd, tmp_path / "ae.pt")
    with pytest.raises(fxvae.CheckpointError, match=r"missing keys \['dec.2.weight'\], unexpected keys \['extra"):
        fxvae.convert_checkpoint(build(MLP), tmp_path / "ae.pt", MLP.inputs(BATCH))


def test_saving_to_a_directory_names_the_file_to_pass(tmp_path: Path) -> None:
    vae, _ = fxvae.convert(build(MLP), MLP.inputs(BATCH))
    with pytest.raises(fxvae.CheckpointError, match=r"it is a directory; pass a file path in it, such as .*vae"):
        fxvae.save(vae, tmp_path)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_saved_file_has_the_mode_torch_save_gives_under_the_umask(umask: int, tmp_path: Path) -> None:
    vae, _ = fxvae.convert(build(MLP), MLP.inputs(BATCH))
    before = os.umask(umask)
    try:
        fxvae.save(vae, tmp_path / "vae.safetensors")
        torch.save(vae.state_dict(), tmp_path / "vae.pt")
    finally:
        os.umask(before)
    mode = (tmp_path / "vae.safetensors").stat().st_mode & 0o777
    assert mode == (tmp_path / "vae.pt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_saving_over_a_file_keeps_its_mode(tmp_path: Path) -> None:
    vae, _ = fxvae.convert(build(MLP), MLP.inputs(BATCH))
    target = tmp_path / "vae.safetensors"
    fxvae.save(vae, target)
    target.chmod(0o640)
    fxvae.save(vae, target)
    assert target.stat().st_mode & 0o777 == 0o640
