"""Files that an earlier release's fxvae.save wrote load unchanged and reproduce that release's outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import fxvae
from tests.fixtures.release_cases import CASES, Case
from tests.fixtures.write_release_files import leaves

RELEASES = sorted(Path(__file__).parent.joinpath("fixtures").glob("release-*"))


@pytest.mark.parametrize("release", RELEASES, ids=[r.name for r in RELEASES])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_saved_file_of_an_earlier_release_loads_and_reproduces_its_outputs(release: Path, case: Case) -> None:
    expected = load_file(str(release / "expected.safetensors"))
    x = expected[f"{case.name}.x"]
    vae, _ = fxvae.load(case.model(), release / f"{case.name}.safetensors", x)
    with torch.no_grad():
        got = leaves(vae.eval()(x))
    want = [expected[f"{case.name}.out.{i}"] for i in range(len(got))]
    assert f"{case.name}.out.{len(got)}" not in expected
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_every_release_fixture_holds_every_case() -> None:
    assert RELEASES
    for release in RELEASES:
        assert {f"{c.name}.safetensors" for c in CASES} <= {p.name for p in release.iterdir()}
