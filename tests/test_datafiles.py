"""Data files for the command line: every tensor format, named arrays, folders of images, and what is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import fxvae
from fxvae.datafiles import read_data

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
    with pytest.raises(fxvae.InputError, match=r"differ in size.*--resize"):
        read_data(tmp_path)
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
