"""Data from files, for the command line: tensors in ``.npy``, ``.npz``, ``.pt``/``.pth`` or ``.safetensors``
files, and folders of images.

numpy, safetensors and Pillow (the ``images`` extra) are imported when a file of their kind is read.
"""

from __future__ import annotations

import collections
import os
import warnings
from collections.abc import Mapping
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
      become float32, not rescaled (8-bit pixels stay in [0, 255]);
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

        loaded = np.load(path, allow_pickle=False)
        if suffix == ".npy":
            return torch.from_numpy(loaded)
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
    """The images in ``folder`` as one float tensor (N, C, H, W) in [0, 1] (see :func:`read_data`).

    A file that cannot be decoded (truncated, or no image) is an :class:`~fxvae.InputError` naming it; a folder
    that mixes grey and colour images is read as RGB (a grey image's value in each channel), with a warning
    naming one image of each kind; images of different sizes without ``resize`` name the odd one and both sizes.
    """
    try:
        from PIL import Image
    except ImportError as err:
        raise InputError("reading a folder of images needs Pillow: pip install 'fxvae[images]'") from err
    import numpy as np

    root = Path(folder)
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"the folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    images = [_open_image(Image, file) for file in files]
    grey = [f for f, image in zip(files, images, strict=True) if image.mode in GREY_MODES]
    colour = [f for f in files if f not in set(grey)]
    if grey and colour:
        warnings.warn(
            f"the folder {str(root)!r} mixes grey images ({_some(grey)}) and colour ones ({_some(colour)}): all are "
            "read as RGB, a grey image's value in each of the 3 channels; convert them yourself if the model "
            "reads grey images",
            stacklevel=2,
        )
    mode = "RGB" if colour else "L"
    sizes = {image.size for image in images}
    if resize is None and len(sizes) > 1:
        counts = collections.Counter(image.size for image in images)
        common = counts.most_common(1)[0][0]
        first = next(f for f, i in zip(files, images, strict=True) if i.size == common)
        odd, odd_image = next((f, i) for f, i in zip(files, images, strict=True) if i.size != common)
        raise InputError(
            f"the images in {str(root)!r} differ in size: {odd.name} is {_size(odd_image.size)}, where "
            f"{first.name} and {counts[common] - 1} more are {_size(common)} ({len(counts)} sizes in all); pass a "
            "size to scale them to (--resize HEIGHT,WIDTH)"
        )
    arrays = []
    for image in images:
        converted = image.convert(mode)
        if resize is not None:
            converted = converted.resize((resize[1], resize[0]), Image.BILINEAR)
        array = np.asarray(converted, dtype=np.float32) / 255.0
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays))


def _open_image(image_module: Any, file: Path) -> Any:
    """The decoded image in ``file``, or an InputError naming it (a truncated or damaged file, or no image)."""
    try:
        with image_module.open(file) as image:
            image.load()
            return image.copy()
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
