"""The torch backend's tiling and the backend choice, stated as values: how large the tiles of a stream are, how
they cover a matrix, and why a device the kernels cannot run on is refused."""

from __future__ import annotations

import pytest
import torch

import fxvae.ops.kl as kl_module
from fxvae.errors import KLError
from fxvae.ops.kl import _chunk, _tiles, _triton_problem, kl_divergence


@pytest.mark.parametrize(
    ("threads", "elements"), [(1, 1 << 17), (2, 1 << 17), (4, 1 << 18), (24, 24 << 16), (64, 1 << 22), (128, 1 << 22)]
)
def test_a_cpu_tile_is_2_to_the_16_elements_per_thread_between_2_to_the_17_and_2_to_the_22(threads, elements) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        chunk = _chunk(torch.device("cpu"))
        assert chunk == elements and isinstance(chunk, int)
    finally:
        torch.set_num_threads(before)


def test_a_device_tile_is_2_to_the_22_elements() -> None:
    assert _chunk(torch.device("meta")) == 1 << 22 == kl_module._DEVICE_CHUNK


@pytest.mark.parametrize(
    ("batch", "dims", "chunk", "tiles"),
    [
        (5, 1, 4, [(0, 4, 0, 1), (4, 5, 0, 1)]),  # whole rows, as many as fit
        (2, 3, 1, [(0, 1, 0, 1), (0, 1, 1, 2), (0, 1, 2, 3), (1, 2, 0, 1), (1, 2, 1, 2), (1, 2, 2, 3)]),
        (3, 4, 8, [(0, 2, 0, 4), (2, 3, 0, 4)]),
        (2, 10, 4, [(0, 1, 0, 4), (0, 1, 4, 8), (0, 1, 8, 10), (1, 2, 0, 4), (1, 2, 4, 8), (1, 2, 8, 10)]),
    ],
    ids=["one_column", "one_element_tiles", "two_rows_a_tile", "rows_cut_into_columns"],
)
def test_tiles_cover_the_matrix_in_row_major_order_with_at_most_chunk_elements(batch, dims, chunk, tiles) -> None:
    got = [(r.start, r.stop, c.start, c.stop) for r, c in _tiles(batch, dims, chunk)]
    assert got == tiles


def test_a_device_other_than_cpu_or_cuda_is_refused_and_cuda_is_refused_only_for_want_of_triton() -> None:
    assert _triton_problem(torch.device("meta")) == "the tensors are on meta and the kernels run on cuda only"
    cuda = _triton_problem(torch.device("cuda"))
    assert cuda is None or cuda.startswith("triton cannot be imported")


def test_scalars_are_refused_with_the_shape_to_pass() -> None:
    with pytest.raises(KLError, match=r"^mu and log_sigma are scalars; pass tensors of shape \(batch, \.\.\.\)$"):
        kl_divergence(torch.tensor(0.0), torch.tensor(0.0))


def test_inputs_on_two_devices_are_refused_naming_both() -> None:
    with pytest.raises(KLError, match=r"^mu is on meta but log_sigma is on cpu; move them to one device$"):
        kl_divergence(torch.zeros(2, 3, device="meta"), torch.zeros(2, 3))
