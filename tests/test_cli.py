"""The ``fxvae`` command line: each command's output and each bad input's exit code and message."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import fxvae
from fxvae.cli.app import app
from fxvae.cli.errors import ExitCode
from fxvae.study.options import CompareOptions
from tests import cli_models

MODELS = str(Path(__file__).with_name("cli_models.py"))
MLP = f"{MODELS}:mlp_ae"
QUICK_BENCH = ("--repeats", "1", "--warmup", "1", "--repeat-ms", "1")
"""A bench that measures nothing worth reading, fast: these tests check the command, not the numbers."""
CONV = f"{MODELS}:conv_ae"

needs_io = pytest.mark.skipif(
    not hasattr(fxvae, "convert_checkpoint"),
    reason="fxvae.convert_checkpoint (fxvae/io/checkpoints.py) not available yet",
)
needs_onnx = pytest.mark.skipif(not hasattr(fxvae, "export_onnx"), reason="fxvae.export_onnx not available yet")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def ae_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "ae.safetensors"
    save_file(cli_models.mlp_ae().state_dict(), str(path))
    return path


def test_inspect_shows_tracer_profile_and_bottleneck() -> None:
    code, out, _ = run("inspect", MLP, "--input-shape", "2,16")
    assert code == 0
    assert "tracer: fx" in out
    assert "<- bottleneck" in out
    assert "chosen: narrowest node" in out


def test_inspect_json_lists_every_data_path_node() -> None:
    code, out, _ = run("inspect", CONV, "--input-shape", "1,3,8,8", "--json")
    assert code == 0
    profile = json.loads(out)
    assert profile["bottleneck"]["shape"] == [2, 4, 4]
    assert profile["nodes"][0]["width"] == 3 * 8 * 8
    assert all(n["separator"] for n in profile["nodes"])


def test_inspect_marks_bypassed_nodes_with_forced_bottleneck() -> None:
    code, out, err = run("inspect", f"{MODELS}:skip_ae", "--input-shape", "2,16", "--bottleneck", "down", "--json")
    assert code == 0
    nodes = {n["name"]: n for n in json.loads(out)["nodes"]}
    assert nodes["down"]["separator"] is False
    assert nodes["down"]["bypass"] == "x -> add"
    reason = json.loads(out)["bottleneck"]["candidates"][0]["reason"]
    assert reason == "forced; bypassed by x -> add"
    assert err.startswith("warning: bottleneck 'down' (down) is bypassed by x -> add")
    assert "warnings.warn" not in err and err.count("\n") == 1


def test_inspect_plot_writes_png(tmp_path: Path) -> None:
    png = tmp_path / "widths.png"
    code, _, _ = run("inspect", CONV, "--input-shape", "1,3,8,8", "--plot", str(png))
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@needs_io
def test_inspect_loads_checkpoint(ae_checkpoint: Path) -> None:
    code, _, err = run("inspect", MLP, "--input-shape", "2,16", "--checkpoint", str(ae_checkpoint))
    assert code == 0, err


@pytest.mark.parametrize(
    ("model", "shape", "code", "message"),
    [
        ("no_colon", "2,16", ExitCode.USAGE, "must be 'package.module:factory'"),
        (MLP, "2,x", ExitCode.USAGE, "comma-separated positive integers"),
        (MLP, "2,0", ExitCode.USAGE, "comma-separated positive integers"),
        (f"{MODELS}:missing", "2,16", ExitCode.MODEL, "has no callable 'missing'; callables there: .*mlp_ae"),
        ("no_such_pkg.models:ae", "2,16", ExitCode.MODEL, "cannot import module 'no_such_pkg.models'"),
        ("nowhere/models.py:ae", "2,16", ExitCode.MODEL, "does not exist"),
        (f"{MODELS}:broken", "2,16", ExitCode.MODEL, "raised RuntimeError: weights server unreachable"),
        (f"{MODELS}:not_a_module", "2,16", ExitCode.MODEL, "returned int, not a torch.nn.Module"),
        (MLP, "2,8", ExitCode.DATA, r"--input-shape 2,8 has shape \[2, 8\], but Sequential takes \['batch', 16\]"),
        (f"{MODELS}:fails_on_any_input", "2,16", ExitCode.MODEL, r"_Fails fails on --input-shape 2,16 \(shape \[2, "),
        (f"{MODELS}:skip_ae", "2,16", ExitCode.CONVERSION, "no node narrower than the input"),
    ],
)
def test_inspect_bad_input_is_one_line_and_exit_code(model: str, shape: str, code: int, message: str) -> None:
    exit_code, _, err = run("inspect", model, "--input-shape", shape)
    assert exit_code == code
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    assert re.search(message, err), err


def test_debug_adds_traceback() -> None:
    code, _, err = run("inspect", f"{MODELS}:broken", "--input-shape", "2,16", "--debug")
    assert code == ExitCode.MODEL
    assert "Traceback" in err


@needs_io
def test_convert_writes_vae(tmp_path: Path, ae_checkpoint: Path) -> None:
    out = tmp_path / "vae.safetensors"
    code, _, err = run(
        "convert",
        MLP,
        "--checkpoint",
        str(ae_checkpoint),
        "--input-shape",
        "2,16",
        "--out",
        str(out),
        "--log-sigma-init",
        "-3",
    )
    assert code == 0, err
    assert "bottleneck" in err
    vae, _ = fxvae.load(cli_models.mlp_ae(), out, torch.randn(2, 16))
    assert fxvae.conversion(vae).log_sigma_init == -3.0
    assert torch.equal(vae.get_parameter("log_sigma_head.bias"), torch.full((4,), -3.0))
    ae = cli_models.mlp_ae()
    ae.load_state_dict(safetensors.torch.load_file(ae_checkpoint))
    x = torch.randn(5, 16)
    assert torch.equal(vae.eval()(x), ae(x))


def test_convert_refuses_existing_output(tmp_path: Path, ae_checkpoint: Path) -> None:
    out = tmp_path / "vae.safetensors"
    out.write_bytes(b"keep me")
    code, _, err = run("convert", MLP, "--checkpoint", str(ae_checkpoint), "--input-shape", "2,16", "--out", str(out))
    assert code == ExitCode.USAGE
    assert "exists; pass --force" in err
    assert out.read_bytes() == b"keep me"


@needs_io
def test_convert_force_overwrites(tmp_path: Path, ae_checkpoint: Path) -> None:
    out = tmp_path / "vae.safetensors"
    out.write_bytes(b"old")
    code, _, err = run(
        "convert",
        MLP,
        "--checkpoint",
        str(ae_checkpoint),
        "--input-shape",
        "2,16",
        "--out",
        str(out),
        "--force",
    )
    assert code == 0, err
    assert out.read_bytes() != b"old"


@needs_io
def test_convert_corrupt_checkpoint_is_checkpoint_error(tmp_path: Path) -> None:
    bad = tmp_path / "ae.safetensors"
    bad.write_bytes(b"\x00not a safetensors file")
    code, _, err = run(
        "convert",
        MLP,
        "--checkpoint",
        str(bad),
        "--input-shape",
        "2,16",
        "--out",
        str(tmp_path / "vae.safetensors"),
    )
    assert code == ExitCode.CHECKPOINT
    assert err.startswith("error: ") and err.count("\n") == 1


@needs_io
def test_convert_mismatched_checkpoint_is_checkpoint_error(tmp_path: Path) -> None:
    other = tmp_path / "conv.safetensors"
    save_file(cli_models.conv_ae().state_dict(), str(other))
    code, _, err = run(
        "convert",
        MLP,
        "--checkpoint",
        str(other),
        "--input-shape",
        "2,16",
        "--out",
        str(tmp_path / "v.safetensors"),
    )
    assert code == ExitCode.CHECKPOINT
    assert "does not fit" in err or "mismatch" in err, err


def test_convert_missing_checkpoint_is_checkpoint_error(tmp_path: Path) -> None:
    code, _, err = run(
        "convert",
        MLP,
        "--checkpoint",
        str(tmp_path / "nope.pt"),
        "--input-shape",
        "2,16",
        "--out",
        str(tmp_path / "vae.safetensors"),
    )
    assert code == ExitCode.CHECKPOINT
    assert "does not exist" in err


@needs_io
@needs_onnx
def test_convert_exports_onnx(tmp_path: Path, ae_checkpoint: Path) -> None:
    pytest.importorskip("onnx")
    onnx_path = tmp_path / "vae.onnx"
    code, _, err = run(
        "convert",
        MLP,
        "--checkpoint",
        str(ae_checkpoint),
        "--input-shape",
        "2,16",
        "--out",
        str(tmp_path / "vae.safetensors"),
        "--onnx",
        str(onnx_path),
    )
    assert code == 0, err
    assert onnx_path.stat().st_size > 0


def test_bench_json_has_both_modes_and_ratios() -> None:
    code, out, err = run(
        "bench",
        CONV,
        "--input-shape",
        "1,3,8,8",
        "--batch-sizes",
        "1,2",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--repeat-ms",
        "1",
        "--json",
    )
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [(r["mode"], r["batch_size"]) for r in rows] == [
        ("eval", 1),
        ("eval", 2),
        ("train", 1),
        ("train", 2),
    ]
    assert all(r["ratio"] > 0 and r["ae"]["median"] > 0 for r in rows)


def _quick_mlp_bench(*options: str) -> tuple[int, str, str]:
    return run("bench", MLP, "--input-shape", "1,16", "--batch-sizes", "2", *options, *QUICK_BENCH)


def test_bench_table() -> None:
    code, out, err = _quick_mlp_bench("--mode", "train")
    assert code == 0, err
    assert "VAE/AE" in out


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--mode", "infer", "Invalid value for '--mode': 'infer' is not one of 'eval', 'train', 'eval,train'"),
        ("--device", "tpu", "Invalid value for '--device': 'tpu' is not one of 'cpu', 'cuda'"),
    ],
)
def test_bench_bad_option_is_usage_error(option: str, value: str, message: str) -> None:
    code, _, err = run("bench", MLP, "--input-shape", "1,16", option, value)
    assert code == ExitCode.USAGE
    assert message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_bench_cuda_without_cuda_is_usage_error() -> None:
    code, _, err = run("bench", MLP, "--input-shape", "1,16", "--device", "cuda")
    assert code == ExitCode.USAGE
    assert "CUDA is not available" in err


def test_console_script_runs() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "fxvae.cli", "--help"], capture_output=True, text=True, check=False
    )
    assert help_text.returncode == 0 and "inspect" in help_text.stdout


def test_the_top_level_help_lists_every_command_with_a_line_each() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for command in app.commands:
        described = [line for line in out.splitlines() if re.match(rf"^\s+{command}\s+\S", line)]
        assert len(described) == 2, (command, out)  # the docstring's list and click's Commands section


def test_the_top_level_description_names_all_five_commands() -> None:
    code, out, _ = run("--help")
    description = out.split("Options:")[0]
    described = [m[1] for m in re.finditer(r"^\s+(\w+)\s{2,}\S", description, re.MULTILINE)]
    assert code == 0
    assert described == ["inspect", "convert", "bench", "evaluate", "compare"], out
    assert sorted(app.commands) == sorted(described)


def test_the_compare_help_says_what_the_random_start_is_and_for_which_latents() -> None:
    code, out, _ = run("compare", "--help")
    assert code == 0
    said = re.search(r"random \((\w+(?:, \w+)*): ([^)]*)\)", " ".join(out.split()))
    assert said is not None, out
    assert said[2].startswith("the trained AE with its quantiser at a new one's random initialisation")
    assert "warm without the fit to the data" in said[2]
    # The latents the help names are those whose comparison takes the random start (fxvae/study/starts.py).
    for latent in ("gaussian", "vq", "fsq"):
        try:
            CompareOptions(latent=latent, starts=("warm", "random"))
            takes_random = True
        except fxvae.InputError:
            takes_random = False
        assert takes_random == (latent in said[1].split(", ")), latent


@pytest.mark.parametrize(
    "command",
    [[], ["inspect"], ["convert"], ["bench"], ["compare"]],
    ids=["root", "inspect", "convert", "bench", "compare"],
)
def test_help_screens_show_plain_metavars(command: list[str]) -> None:
    code, out, _ = run(*command, "--help")
    assert code == 0
    assert "<bool>" not in out and "{" not in out
    if command:
        assert f"Usage: app {command[0]} [OPTIONS] MODEL" in out


def test_conversion_options_come_from_the_recipe_dataclass_and_the_latent_configs() -> None:
    _, out, _ = run("convert", "--help")
    for owner, field in ((fxvae.Options, "bottleneck"), (fxvae.Gaussian, "log_sigma_init"), (fxvae.VQ, "beta")):
        help_text = owner.__dataclass_fields__[field].metadata["help"]
        assert f"--{field.replace('_', '-')}" in out and " ".join(help_text.split()[:4]) in " ".join(out.split())
    assert "--ema / --no-ema" in out and "--levels" in out and "--fold / --no-fold" in out


def test_a_latent_option_of_another_family_is_refused_naming_it() -> None:
    code, _, err = run("bench", MLP, "--input-shape", "2,16", "--latent", "fsq", "--codebook-size", "16")
    assert code == ExitCode.USAGE
    assert "--codebook-size applies to --latent vq, and this conversion makes --latent fsq: leave it out" in err


def test_a_latent_option_out_of_range_is_a_usage_error_naming_it() -> None:
    code, _, err = run("bench", MLP, "--input-shape", "2,16", "--latent", "vq", "--codebook-size", "1")
    assert code == ExitCode.USAGE
    assert "codebook-size" in err and "must be an integer of at least 2" in err


def test_an_input_shape_without_batch_dimension_says_so() -> None:
    code, _, err = run("inspect", MLP, "--input-shape", "16")
    assert code == ExitCode.USAGE
    assert "--input-shape 16 has no batch dimension: put the batch first, e.g. --input-shape 1,16" in err


def test_inspect_plot_into_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = run("inspect", MLP, "--input-shape", "2,16", "--plot", str(tmp_path / "nodir" / "x.png"))
    assert code == ExitCode.USAGE
    assert err.startswith("error: --plot: directory") and "does not exist" in err


def test_errors_suggest_command_line_options() -> None:
    code, _, err = run("inspect", f"{MODELS}:skip_ae", "--input-shape", "2,16")
    assert code == ExitCode.CONVERSION
    assert "--bottleneck <node or module>" in err and "bottleneck=" not in err


def test_a_corrupt_pt_checkpoint_gives_no_weights_only_advice(tmp_path: Path) -> None:
    bad = tmp_path / "ae.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, bad)
    code, _, err = run("inspect", MLP, "--input-shape", "2,16", "--checkpoint", str(bad))
    assert code == ExitCode.CHECKPOINT
    assert "weights_only" not in err and "Re-running" not in err


def test_bench_reports_its_thread_count_and_no_negative_memory() -> None:
    code, out, err = _quick_mlp_bench()
    assert code == 0, err
    assert "torch threads: 1" in out
    assert re.search(r"(?<![\d.])-0\.0(?![\d])", out) is None  # a negative zero, not the end of "0.037-0.037"


def test_auto_log_sigma_without_data_names_the_calibration_option(tmp_path: Path, ae_checkpoint: Path) -> None:
    out = str(tmp_path / "vae.safetensors")
    args = ("--checkpoint", str(ae_checkpoint), "--input-shape", "2,16", "--out", out, "--log-sigma-init", "auto")
    code, _, err = run("convert", MLP, *args)
    assert code == ExitCode.CONVERSION
    assert "--calibration FILE" in err and "calibration=" not in err


def test_bench_output_in_a_file_keeps_every_number_and_says_which_clock() -> None:
    code, out, err = _quick_mlp_bench()
    assert code == 0, err
    assert "…" not in out
    assert "VAE/AE wall clock" in out and "VAE/AE CPU time" in out


def test_bench_measures_the_peak_memory_of_a_cpu_step() -> None:
    code, out, err = _quick_mlp_bench("--mode", "train", "--json")
    assert code == 0, err
    row = json.loads(out)["rows"][0]
    assert row["ae"]["peak_mem_mib"] > 0 and row["vae"]["peak_mem_mib"] > 0


def test_every_inspect_column_has_a_header() -> None:
    code, out, _ = run("inspect", MLP, "--input-shape", "2,16")
    assert code == 0
    assert "role on the data path" in out


# --- data that does not fit the model: exit 7 in every command ---------------------------------------------------


@pytest.fixture
def wrong_data(tmp_path: Path) -> Path:
    """12 features for a model that reads 16."""
    torch.save(torch.rand(20, 12), tmp_path / "wide.pt")
    return tmp_path / "wide.pt"


def _data_commands(ae: Path, wide: Path, good: Path, out: Path) -> dict[str, tuple[str, ...]]:
    return {
        "inspect": ("inspect", MLP, "--input-shape", "2,12"),
        "convert": ("convert", MLP, "--checkpoint", str(ae), "--input-shape", "2,12", "--out", str(out / "v.st")),
        "convert --calibration": (
            "convert", MLP, "--checkpoint", str(ae), "--input-shape", "2,16", "--out", str(out / "v.st"),
            "--calibration", str(wide),
        ),
        "evaluate": ("evaluate", str(ae), "--model", MLP, "--data", str(wide)),
        "compare --data": ("compare", MLP, "--checkpoint", str(ae), "--data", str(wide), "--out", str(out / "c")),
        "compare --test": (
            "compare", MLP, "--checkpoint", str(ae), "--data", str(good), "--test", str(wide), "--out", str(out / "c"),
        ),
    }  # fmt: skip


@pytest.mark.parametrize(
    "command", ["inspect", "convert", "convert --calibration", "evaluate", "compare --data", "compare --test"]
)
def test_data_that_does_not_fit_the_model_exits_7_naming_it_and_both_shapes(
    command: str, ae_checkpoint: Path, wrong_data: Path, tmp_path: Path
) -> None:
    torch.save(torch.rand(20, 16), tmp_path / "good.pt")
    args = _data_commands(ae_checkpoint, wrong_data, tmp_path / "good.pt", tmp_path)[command]
    code, _, err = run(*args)
    assert code == ExitCode.DATA, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    given = "--input-shape 2,12 has shape [2, 12]" if "--input-shape" in args and "2,12" in args else None
    option = next(o for o in ("--calibration", "--test", "--data") if o in args) if given is None else None
    expected = given or f"{option} {wrong_data} has shape [20, 12]"
    assert f"{expected}, but Sequential takes ['batch', 16]: its layer '0' (Linear) reads 16 features" in err


def test_images_of_another_size_name_the_layer_that_gets_another_width(tmp_path: Path) -> None:
    (tmp_path / "models.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class Flat(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv, self.fc, self.up = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(128, 4), nn.Linear(4, 64)\n"
        "    def forward(self, x):\n"
        "        return self.up(self.fc(self.conv(x).flatten(1))).view(-1, 1, 8, 8)\n"
        "def flat():\n    return Flat()\n"
    )
    code, _, err = run("inspect", f"{tmp_path / 'models.py'}:flat", "--input-shape", "1,1,10,10")
    assert code == ExitCode.DATA
    assert err.startswith("error: --input-shape 1,1,10,10 has shape [1, 1, 10, 10], which the first layer of Flat ")
    assert "its layer 'fc' (Linear) reads 128 features and gets ['batch', 200] from it" in err


# --- checkpoints ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "convert", "bench", "compare"])
def test_a_vae_file_passed_as_an_autoencoder_checkpoint_is_named_with_the_command_that_reads_it(
    command: str, tmp_path: Path
) -> None:
    vae, _ = fxvae.convert(cli_models.mlp_ae(), torch.randn(2, 16))
    fxvae.save(vae, tmp_path / "vae.safetensors")
    torch.save(torch.rand(20, 16), tmp_path / "data.pt")
    checkpoint = ("--checkpoint", str(tmp_path / "vae.safetensors"))
    args = {
        "inspect": ("inspect", MLP, "--input-shape", "2,16", *checkpoint),
        "convert": ("convert", MLP, *checkpoint, "--input-shape", "2,16", "--out", str(tmp_path / "v.safetensors")),
        "bench": ("bench", MLP, "--input-shape", "1,16", *checkpoint, *QUICK_BENCH),
        "compare": ("compare", MLP, *checkpoint, "--data", str(tmp_path / "data.pt"), "--out", str(tmp_path / "c")),
    }[command]
    code, _, err = run(*args)
    assert code == ExitCode.CHECKPOINT
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "vae.safetensors' is a VAE that fxvae.save wrote, not an autoencoder checkpoint" in err
    assert f"`fxvae evaluate {tmp_path / 'vae.safetensors'} --model MODEL --data DATA`" in err


def test_no_message_carries_terminal_escape_codes() -> None:
    code, _, err = run("inspect", f"{MODELS}:bold_failure", "--input-shape", "2,16")
    assert code == ExitCode.MODEL
    assert "raised RuntimeError: do not trust this" in err and "\x1b" not in err
