"""A folder of images read lazily (ImageFolder) and a memory-mapped .npy: the values of the eager reader, an object
that does not grow with the folder, pickles for DataLoader workers, and damaged files named when they are read."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import fxvae
from fxvae.io.datafiles import ImageFolder, open_data, read_data, read_images

pytest.importorskip("PIL")


def _noise(path: Path, size: tuple[int, int], mode: str, seed: int) -> None:
    """An image of random pixels (``size`` as Pillow's (width, height)), so that every value is checked."""
    from PIL import Image

    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def _folder(root: Path, count: int, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> Path:
    root.mkdir()
    for i in range(count):
        _noise(root / f"{i:04d}.png", size, mode, i)
    return root


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("resize", [None, (7, 5)])
def test_each_item_equals_the_eager_readers_image(mode: str, resize: tuple[int, int] | None, tmp_path: Path) -> None:
    root = _folder(tmp_path / "images", 5, mode=mode)
    stacked = read_images(root, resize=resize)
    images = ImageFolder(root, resize=resize)
    assert len(images) == 5 and images.shape == tuple(stacked.shape[1:])
    for i in range(5):
        assert images[i].dtype == torch.float32 and torch.equal(images[i], stacked[i])


def test_a_folder_mixing_grey_and_colour_reads_rgb_with_the_readers_warning(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    _noise(root / "a.png", (4, 4), "L", 0)
    _noise(root / "b.png", (4, 4), "RGB", 1)
    with pytest.warns(UserWarning, match=r"mixes grey images \(a.png\) and colour ones \(b.png\)"):
        images = ImageFolder(root)
    with pytest.warns(UserWarning, match="mixes"):
        stacked = read_images(root)
    assert images.shape == (3, 4, 4) and torch.equal(images[0], stacked[0])


def _state_bytes(images: ImageFolder) -> int:
    return len(pickle.dumps(images))


def test_the_folder_object_holds_names_not_pixels(tmp_path: Path) -> None:
    # 10 and 200 RGB images of 32x32: 12 KiB of float32 each once decoded, 14 bytes of name each.
    small = ImageFolder(_folder(tmp_path / "small", 10, (32, 32)))
    large = ImageFolder(_folder(tmp_path / "large", 200, (32, 32)))
    for i in range(len(large)):
        large[i]
    growth = _state_bytes(large) - _state_bytes(small)
    assert 0 < growth < 190 * 40, growth


def test_the_folder_pickles_and_reads_in_dataloader_workers(tmp_path: Path) -> None:
    images = ImageFolder(_folder(tmp_path / "images", 6, (8, 8)))
    again = pickle.loads(pickle.dumps(images))
    assert torch.equal(again[3], images[3])
    loader = torch.utils.data.DataLoader(images, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    assert torch.equal(torch.cat(list(loader)), torch.stack([images[i] for i in range(6)]))


def _truncate(path: Path) -> None:
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


def test_a_truncated_image_is_named_when_it_is_read(tmp_path: Path) -> None:
    root = _folder(tmp_path / "images", 4, (32, 32))
    _truncate(root / "0002.png")
    images = ImageFolder(root)  # the header is whole: the start does not see it
    images[1]
    with pytest.raises(fxvae.InputError, match=r"^cannot read the image '.*/0002.png' \(OSError: .*replace it or move"):
        images[2]


def test_an_image_of_another_size_read_after_the_start_names_both_sizes_and_resize(tmp_path: Path) -> None:
    root = _folder(tmp_path / "images", 4, (12, 10))
    images = ImageFolder(root)
    _noise(root / "0003.png", (9, 7), "RGB", 3)  # replaced while the run reads the folder
    expected = r"^the image '.*/0003.png' is 7x9, where the images of the folder are 10x12: .*\(--resize HEIGHT,WIDTH\)"
    with pytest.raises(fxvae.InputError, match=expected):
        images[3]


def test_an_image_of_another_size_is_refused_at_the_start_as_the_eager_reader_does(tmp_path: Path) -> None:
    root = _folder(tmp_path / "images", 3, (12, 10))
    _noise(root / "odd.png", (9, 7), "RGB", 9)
    with pytest.raises(fxvae.InputError, match=r"differ in size: odd.png is 7x9, where 0000.png and 2 more are 10x12"):
        ImageFolder(root)
    assert ImageFolder(root, resize=(10, 12))[3].shape == (3, 10, 12)


def test_a_file_that_is_no_image_is_named_at_the_start(tmp_path: Path) -> None:
    root = _folder(tmp_path / "images", 2, (8, 8))
    (root / "0001.png").write_bytes(b"not a png at all")
    with pytest.raises(fxvae.InputError, match=r"^cannot read the image '.*/0001.png' \(UnidentifiedImageError"):
        ImageFolder(root)


def test_open_data_gives_a_folder_lazily_and_other_files_as_read_data_does(tmp_path: Path) -> None:
    root = _folder(tmp_path / "images", 2, (8, 8))
    assert isinstance(open_data(root), ImageFolder)
    torch.save(torch.ones(3, 2), tmp_path / "data.pt")
    assert torch.equal(open_data(tmp_path / "data.pt"), torch.ones(3, 2))


def test_a_float_npy_file_is_memory_mapped_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    array = np.random.default_rng(0).random((50, 3, 4), dtype=np.float32)
    np.save(tmp_path / "data.npy", array)
    loaded: list[np.ndarray] = []
    real_load = np.load

    def spy(*args: object, **kwargs: object) -> np.ndarray:
        loaded.append(real_load(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(np, "load", spy)
    got = read_data(tmp_path / "data.npy")
    assert isinstance(loaded[0], np.memmap)
    assert np.shares_memory(got.numpy(), loaded[0]) and torch.equal(got, torch.from_numpy(array))


def test_the_command_line_reads_a_folder_as_the_lazy_dataset(tmp_path: Path) -> None:
    from fxvae.cli.data import read_data_source

    root = _folder(tmp_path / "images", 3, (12, 10))
    assert isinstance(read_data_source(str(root), resize=None), ImageFolder)
    assert read_data_source(str(root), resize="6,5").shape == (3, 6, 5)


def test_evaluate_cuts_a_folder_into_its_batch_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner
    from safetensors.torch import save_file

    from fxvae.cli.app import app
    from tests import cli_models

    root = _folder(tmp_path / "images", 3, (32, 32))
    save_file(cli_models.conv_ae().state_dict(), str(tmp_path / "ae.safetensors"))
    asked: list[object] = []

    def evaluate(*args: object, **kwargs: object) -> None:
        asked.append(kwargs["batch_size"])
        raise fxvae.InputError("stop here")

    monkeypatch.setattr(fxvae, "evaluate", evaluate)
    model = f"{Path(cli_models.__file__)}:conv_ae"
    args = ["evaluate", str(tmp_path / "ae.safetensors"), "--model", model, "--data", str(root), "--batch-size", "2"]
    CliRunner().invoke(app, args)
    assert asked == [2]


def test_compare_quick_runs_on_a_folder_of_images(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from safetensors.torch import save_file

    from fxvae.cli.app import app
    from tests import cli_models

    root = _folder(tmp_path / "images", 24, (8, 8))
    save_file(cli_models.conv_ae().state_dict(), str(tmp_path / "ae.safetensors"))
    model = f"{Path(cli_models.__file__)}:conv_ae"
    args = ["compare", model, "--checkpoint", str(tmp_path / "ae.safetensors"), "--data", str(root)]
    args += ["--quick", "--k", "1", "--final-k", "2", "--starts", "ae,warm", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert fxvae.study.read(tmp_path / "out").config["input_shape"] == [3, 8, 8]


@pytest.mark.parametrize("workers", [0, 1])
def test_an_image_damaged_mid_run_is_named_the_finished_epochs_kept_and_the_run_resumes(
    workers: int, tmp_path: Path
) -> None:
    from tests import cli_models

    root = _folder(tmp_path / "images", 24, (8, 8))
    damaged = root / "0003.png"
    good = damaged.read_bytes()
    options = {"epochs": 3, "seeds": 1, "starts": ("warm",), "k": 1, "final_k": 2, "batch_size": 8}

    def damage_after_epoch_1(record: dict) -> None:
        if record["epoch"] == 1:
            damaged.write_bytes(good[: len(good) // 2])

    out = tmp_path / "out"
    with pytest.raises(fxvae.InputError, match=r"0003\.png"):
        fxvae.compare(
            cli_models.conv_ae(),
            ImageFolder(root),
            out=out,
            workers=workers,
            callbacks=[damage_after_epoch_1],
            progress=False,
            **options,
        )
    assert [p.epoch for p in fxvae.study.read(out).runs[0].points] == [0, 1]
    damaged.write_bytes(good)
    result = fxvae.compare(
        cli_models.conv_ae(), ImageFolder(root), out=out, workers=workers, resume=True, progress=False, **options
    )
    assert [p.epoch for p in result.runs[0].points] == [0, 1, 2, 3]
