"""Data files for the command line: every tensor format, named arrays, folders of images, and what is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import fxvae
from fxvae.io.datafiles import read_data
from tests import cli_models

DATA = torch.rand(6, 2, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".safetensors"])
def test_each_tensor_format_reads_back_the_array(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"data{suffix}"
    if suffix == ".npy":
        np.save(path, DATA.numpy())
    elif suffix == ".npz":
        np.savez(path, images=DATA.numpy())
    elif suffix == ".pt":
        torch.save(DATA, path)
    else:
        save_file({"data": DATA}, str(path))
    assert torch.equal(read_data(path), DATA)


def test_a_file_of_several_arrays_gives_data_or_the_one_named(tmp_path: Path) -> None:
    np.savez(tmp_path / "split.npz", data=DATA.numpy(), labels=np.arange(6))
    assert torch.equal(read_data(tmp_path / "split.npz"), DATA)
    assert torch.equal(read_data(f"{tmp_path / 'split.npz'}:labels"), torch.arange(6).float())
    np.savez(tmp_path / "two.npz", train=DATA.numpy(), test=DATA.numpy())
    with pytest.raises(fxvae.InputError, match="none is called 'data': name one"):
        read_data(tmp_path / "two.npz")
    with pytest.raises(fxvae.InputError, match="has no array 'valid'"):
        read_data(f"{tmp_path / 'two.npz'}:valid")


def test_integer_pixels_become_float_without_rescaling(tmp_path: Path) -> None:
    np.save(tmp_path / "pixels.npy", np.full((2, 4), 255, dtype=np.uint8))
    got = read_data(tmp_path / "pixels.npy")
    assert got.dtype == torch.float32 and got.max().item() == 255.0


def _image(path: Path, size: tuple[int, int], mode: str, value: int) -> None:
    from PIL import Image

    Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(path)


def test_a_folder_of_grey_images_is_one_channel_in_the_unit_interval(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    for i in range(3):
        _image(tmp_path / f"{i}.png", (5, 4), "L", 51 * i)
    images = read_data(tmp_path)
    assert images.shape == (3, 1, 4, 5)
    torch.testing.assert_close(images[:, 0, 0, 0], torch.tensor([0.0, 0.2, 0.4]))


def test_colour_images_are_three_channels_and_different_sizes_need_a_resize(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    _image(tmp_path / "a.png", (5, 4), "RGB", 255)
    _image(tmp_path / "b.png", (6, 6), "L", 0)
    with pytest.raises(fxvae.InputError, match=r"differ in size.*--resize"), pytest.warns(UserWarning, match="mixes"):
        read_data(tmp_path)
    with pytest.warns(UserWarning, match="mixes"):
        images = read_data(tmp_path, resize=(8, 7))
    assert images.shape == (2, 3, 8, 7)
    assert images[0, 0].min().item() == pytest.approx(1.0) and images[0, 1].max().item() == 0.0


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing.npy", "does not exist"), ("garbage.pt", "cannot read data file"), ("empty", "holds no images")],
)
def test_what_cannot_be_read_is_an_input_error(name: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "garbage.pt").write_bytes(b"not a tensor")
    (tmp_path / "empty").mkdir()
    with pytest.raises(fxvae.InputError, match=message):
        read_data(tmp_path / name)


def _truncated_noise(path: Path, mode: str = "L") -> None:
    """A 32x32 PNG of noise (it compresses badly, so the cut falls inside its pixels) missing its last half."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3) if mode == "RGB" else (32, 32), dtype=np.uint8)
    Image.fromarray(pixels, mode).save(path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


def test_a_truncated_image_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    for i in range(3):
        _image(tmp_path / f"{i}.png", (32, 32), "L", 40 * i)
    _truncated_noise(tmp_path / "1.png")
    with pytest.raises(fxvae.InputError, match=r"^cannot read the image '.*/1.png' \(OSError: .*truncated"):
        read_data(tmp_path)


def test_a_file_that_is_no_image_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    _image(tmp_path / "a.png", (8, 8), "L", 0)
    (tmp_path / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(fxvae.InputError, match=r"^cannot read the image '.*/b.png' \(UnidentifiedImageError"):
        read_data(tmp_path)


def test_a_folder_mixing_grey_and_colour_images_says_so_and_reads_rgb(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    _image(tmp_path / "a.png", (4, 4), "L", 51)
    _image(tmp_path / "b.png", (4, 4), "L", 102)
    _image(tmp_path / "c.png", (4, 4), "RGB", 255)
    expected = r"mixes grey images \(a.png and 1 more\) and colour ones \(c.png\): all are read as RGB"
    with pytest.warns(UserWarning, match=expected):
        images = read_data(tmp_path)
    assert images.shape == (3, 3, 4, 4)
    torch.testing.assert_close(images[0, :, 0, 0], torch.full((3,), 0.2))


def test_an_image_of_another_size_is_named_with_both_sizes(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    for name in ("a", "b", "d"):
        _image(tmp_path / f"{name}.png", (8, 6), "L", 0)
    _image(tmp_path / "c.png", (9, 7), "L", 0)
    expected = r"differ in size: c.png is 7x9, where a.png and 2 more are 6x8 \(2 sizes in all\)"
    with pytest.raises(fxvae.InputError, match=expected):
        read_data(tmp_path)


def test_a_truncated_image_exits_7_in_the_command_line_with_its_name(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from click.testing import CliRunner

    from fxvae.cli.app import app
    from fxvae.cli.errors import ExitCode

    images = tmp_path / "images"
    images.mkdir()
    _image(images / "1.png", (32, 32), "RGB", 40)
    _truncated_noise(images / "0.png", "RGB")
    save_file(cli_models.conv_ae().state_dict(), str(tmp_path / "ae.safetensors"))
    model = f"{Path(cli_models.__file__)}:conv_ae"
    result = CliRunner().invoke(
        app, ["evaluate", str(tmp_path / "ae.safetensors"), "--model", model, "--data", str(images)]
    )
    assert result.exit_code == ExitCode.DATA
    assert result.stderr.startswith(f"error: --data: cannot read the image '{images / '0.png'}'")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_the_command_line_says_a_folder_mixes_grey_and_colour_before_any_error(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from click.testing import CliRunner

    from fxvae.cli.app import app
    from fxvae.cli.errors import ExitCode

    images = tmp_path / "images"
    images.mkdir()
    _image(images / "a.png", (8, 8), "L", 10)
    _image(images / "b.png", (8, 8), "RGB", 10)
    save_file(cli_models.mlp_ae().state_dict(), str(tmp_path / "mlp.safetensors"))  # not the conv AE's weights
    model = f"{Path(cli_models.__file__)}:conv_ae"
    args = ["evaluate", str(tmp_path / "mlp.safetensors"), "--model", model, "--data", str(images)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == ExitCode.CHECKPOINT
    warning, error = result.stderr.splitlines()
    assert warning.startswith(f"warning: the folder '{images}' mixes grey images (a.png) and colour ones (b.png)")
    assert error.startswith("error: checkpoint")
