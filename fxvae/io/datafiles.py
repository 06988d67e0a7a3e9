"""Data from files, for the command line: tensors in ``.npy``, ``.npz``, ``.pt``/``.pth`` or ``.safetensors``
files, and folders of images.

:func:`open_data` is what the commands read: a folder of images as an :class:`ImageFolder` (decoded on access) and
a ``.npy`` file memory-mapped, so that the data need not fit in memory; :func:`read_data` reads any of them whole.
numpy, safetensors and Pillow (the ``images`` extra) are imported when a file of their kind is read.
"""

from __future__ import annotations

import collections
import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from fxvae.errors import InputError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DATA_KEY = "data"
"""The entry read from a file that holds several arrays, unless ``path:name`` names another."""


def read_data(source: str | os.PathLike[str], *, resize: tuple[int, int] | None = None) -> torch.Tensor:
    """The data tensor (batch first) in a file or a folder of images.

    - ``.npy``; ``.npz``, ``.pt``/``.pth`` (``torch.save``) and ``.safetensors`` holding one array, or several
      of which ``data`` (or the one named as ``file.npz:name``) is taken; integer and half-precision arrays
      become float32, not rescaled (8-bit pixels stay in [0, 255]); a float ``.npy`` is memory-mapped, not read;
    - a folder of images: sorted by name, pixels scaled to [0, 1], shape (N, C, H, W) with C = 1 when every
      image is grey and 3 otherwise; the sizes must agree, or ``resize=(height, width)`` scales them.

    >>> torch.save(torch.zeros(8, 64), tmp / "data.pt")
    >>> fxvae.io.datafiles.read_data(tmp / "data.pt").shape
    torch.Size([8, 64])
    """
    name = os.fspath(source)
    path, key = _split_key(name)
    if path.is_dir():
        if key is not None:
            raise InputError(f"{name!r}: a folder of images has no named arrays; pass the folder alone")
        return read_images(path, resize=resize)
    if not path.is_file():
        raise InputError(f"data file {str(path)!r} does not exist")
    if resize is not None:
        raise InputError(f"resize applies to a folder of images, not to the file {str(path)!r}")
    try:
        loaded = _load(path)
    except Exception as err:
        raise InputError(f"cannot read data file {str(path)!r} ({type(err).__name__}: {first_line(err)})") from err
    return _pick(loaded, key, str(path))


def open_data(source: str | os.PathLike[str], *, resize: tuple[int, int] | None = None) -> torch.Tensor | ImageFolder:
    """The data in a file or a folder of images without reading it whole: a folder is an :class:`ImageFolder`
    (decoded a sample at a time) and a float ``.npy`` file a memory-mapped tensor; other files as
    :func:`read_data` reads them. What ``--data``, ``--test``, ``--ae-train`` and ``--calibration`` give.

    >>> from PIL import Image
    >>> for name in ("a", "b"):
    ...     Image.new("L", (6, 4)).save(tmp / f"{name}.png")
    >>> fxvae.io.datafiles.open_data(tmp)
    ImageFolder('...', 2 images of 1x4x6)
    """
    path = Path(os.fspath(source))
    if path.is_dir():
        return ImageFolder(path, resize=resize)
    return read_data(source, resize=resize)


def _split_key(name: str) -> tuple[Path, str | None]:
    """``file.npz:images`` -> (file.npz, "images"); a plain path (a Windows drive included) has no key."""
    head, sep, tail = name.rpartition(":")
    if sep and head and tail and not Path(name).exists() and Path(head).suffix:
        return Path(head), tail
    return Path(name), None


def _load(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        import numpy as np

        if suffix == ".npy":
            # Memory-mapped: pages are read as samples are indexed. Copy-on-write ("c") rather than read-only, as
            # torch warns on a read-only array; an in-place change stays in this process and never reaches the file.
            return torch.from_numpy(np.load(path, mmap_mode="c", allow_pickle=False))
        loaded = np.load(path, allow_pickle=False)
        with loaded:
            return {k: torch.from_numpy(loaded[k]) for k in loaded.files}
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _pick(loaded: Any, key: str | None, name: str) -> torch.Tensor:
    if isinstance(loaded, Mapping):
        tensors = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
        if key is not None and key not in tensors:
            raise InputError(f"{name!r} has no array {key!r}; it holds {', '.join(sorted(tensors)) or 'none'}")
        chosen = key or (DATA_KEY if DATA_KEY in tensors else next(iter(tensors)) if len(tensors) == 1 else None)
        if chosen is None:
            raise InputError(
                f"{name!r} holds several arrays ({', '.join(sorted(tensors))}) and none is called 'data': "
                f"name one, as {name}:{next(iter(sorted(tensors)), 'name')}"
            )
        loaded = tensors[chosen]
    elif key is not None:
        raise InputError(f"{name!r} holds one array, not named ones: pass the file without ':{key}'")
    if not isinstance(loaded, torch.Tensor):
        raise InputError(f"{name!r} holds no data tensor: save one tensor, or a dict with the key 'data'")
    # The data input of a model: integers (uint8 pixels, say) and half floats become float32, unscaled.
    return loaded if loaded.dtype in (torch.float32, torch.float64) else loaded.float()


GREY_MODES = ("L", "LA", "1", "I", "I;16", "F")
"""Pillow modes of one-channel images (LA: grey with alpha, which is dropped)."""


def read_images(folder: str | os.PathLike[str], *, resize: tuple[int, int] | None = None) -> torch.Tensor:
    """The images in ``folder`` as one float tensor (N, C, H, W) in [0, 1] (see :func:`read_data`), decoded
    at once; :class:`ImageFolder` reads the same values a sample at a time.

    A file that cannot be decoded (truncated, or no image) is an :class:`~fxvae.InputError` naming it; a folder
    that mixes grey and colour images is read as RGB (a grey image's value in each channel), with a warning
    naming one image of each kind; images of different sizes without ``resize`` name the odd one and both sizes.
    """
    image_module = _pillow()
    import numpy as np

    root = Path(folder)
    files = _image_files(root)
    images = [_open_image(image_module, file) for file in files]
    mode, _ = _folder_shape(root, files, [(image.size, image.mode) for image in images], resize)
    return torch.from_numpy(np.stack([_pixels(image_module, image, mode, resize) for image in images]))


class ImageFolder(torch.utils.data.Dataset):
    """The images in ``folder`` as a Dataset: item ``i`` is the ``i``-th image by name, decoded when it is read,
    as the float tensor (C, H, W) in [0, 1] that :func:`read_images` stacks (the same channel rules and
    ``resize=(height, width)``).

    At start the files are listed and each one's header is read (its size and mode, about 30 us a PNG, no
    pixels), so that the channels are known, a folder that mixes sizes without ``resize`` is refused naming the
    odd image, and a file that is no image is named at once; the first image is decoded as a check. The object
    holds the file names and the shape only, so it pickles small for DataLoader workers. A file that fails to
    decode later (truncated, or changed since the start) is an :class:`~fxvae.InputError` naming it when read.

    >>> from PIL import Image
    >>> for name in ("a", "b"):
    ...     Image.new("RGB", (6, 4), (255, 0, 0)).save(tmp / f"{name}.png")
    >>> images = fxvae.io.datafiles.ImageFolder(tmp)
    >>> images
    ImageFolder('...', 2 images of 3x4x6)
    >>> images[1][:, 0, 0].tolist()
    [1.0, 0.0, 0.0]
    """

    def __init__(self, folder: str | os.PathLike[str], *, resize: tuple[int, int] | None = None) -> None:
        image_module = _pillow()
        self.root = Path(folder)
        files = _image_files(self.root)
        headers = [_open_image(image_module, file, decode=False) for file in files]
        self.mode, (height, width) = _folder_shape(self.root, files, headers, resize)
        self.names = tuple(file.name for file in files)
        self.resize = resize
        self.shape = (1 if self.mode == "L" else 3, height, width)
        self[0]  # a first image that does not decode is named at the start, not in the first epoch

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> torch.Tensor:
        import numpy as np

        image_module = _pillow()
        file = self.root / self.names[index]
        with _reading(file), image_module.open(file) as image:
            image.load()
            if self.resize is None and image.size[::-1] != self.shape[1:]:
                raise InputError(
                    f"the image {str(file)!r} is {_size(image.size)}, where the images of the folder are "
                    f"{self.shape[1]}x{self.shape[2]}: pass a size to scale them to (--resize HEIGHT,WIDTH)"
                )
            array = _pixels(image_module, image, self.mode, self.resize)
        return torch.from_numpy(np.ascontiguousarray(array))

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, {len(self)} images of {'x'.join(map(str, self.shape))})"


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as err:
        raise InputError("reading a folder of images needs Pillow: pip install 'fxvae[images]'") from err
    return Image


def _image_files(root: Path) -> list[Path]:
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"the folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _folder_shape(
    root: Path, files: list[Path], headers: list[tuple[tuple[int, int], str]], resize: tuple[int, int] | None
) -> tuple[str, tuple[int, int]]:
    """The Pillow mode the folder is read in ("L" when every image is grey, else "RGB") and its (height, width),
    from each file's (size, mode); warns on a mix of grey and colour, refuses a mix of sizes without ``resize``."""
    grey = [f for f, (_, mode) in zip(files, headers, strict=True) if mode in GREY_MODES]
    colour = [f for f in files if f not in set(grey)]
    if grey and colour:
        warnings.warn(
            f"the folder {str(root)!r} mixes grey images ({_some(grey)}) and colour ones ({_some(colour)}): all are "
            "read as RGB, a grey image's value in each of the 3 channels; convert them yourself if the model "
            "reads grey images",
            stacklevel=3,
        )
    counts = collections.Counter(size for size, _ in headers)
    common = counts.most_common(1)[0][0]
    if resize is None and len(counts) > 1:
        first = next(f for f, (size, _) in zip(files, headers, strict=True) if size == common)
        odd, odd_size = next((f, size) for f, (size, _) in zip(files, headers, strict=True) if size != common)
        raise InputError(
            f"the images in {str(root)!r} differ in size: {odd.name} is {_size(odd_size)}, where "
            f"{first.name} and {counts[common] - 1} more are {_size(common)} ({len(counts)} sizes in all); pass a "
            "size to scale them to (--resize HEIGHT,WIDTH)"
        )
    return ("RGB" if colour else "L"), resize or (common[1], common[0])


def _pixels(image_module: Any, image: Any, mode: str, resize: tuple[int, int] | None) -> Any:
    """One image as the float32 array (C, H, W) in [0, 1] of the folder's ``mode``, scaled to ``resize``."""
    import numpy as np

    converted = image.convert(mode)
    if resize is not None:
        converted = converted.resize((resize[1], resize[0]), image_module.BILINEAR)
    array = np.asarray(converted, dtype=np.float32) / 255.0
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _open_image(image_module: Any, file: Path, *, decode: bool = True) -> Any:
    """The decoded image in ``file`` (its (size, mode) where not ``decode``: only the header is read), or an
    InputError naming it (a truncated or damaged file, or no image)."""
    with _reading(file), image_module.open(file) as image:
        if not decode:
            return image.size, image.mode
        image.load()
        return image.copy()


@contextlib.contextmanager
def _reading(file: Path) -> Iterator[None]:
    try:
        yield
    except InputError:
        raise
    except Exception as err:
        raise InputError(
            f"cannot read the image {str(file)!r} ({type(err).__name__}: {first_line(err)}): the file is truncated "
            "or not an image; replace it or move it out of the folder"
        ) from err


def _some(files: list[Path]) -> str:
    return files[0].name if len(files) == 1 else f"{files[0].name} and {len(files) - 1} more"


def _size(size: tuple[int, int]) -> str:
    """Pillow's (width, height) as fxvae writes image sizes: HEIGHTxWIDTH, as --resize takes them."""
    return f"{size[1]}x{size[0]}"
