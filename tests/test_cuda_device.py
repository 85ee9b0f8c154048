"""Choosing the CUDA device: lazy imports, and a one-line reason where it cannot be used."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from numconv.ops import _device

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_reason():
    _device.cuda_unavailable_reason.cache_clear()
    yield
    _device.cuda_unavailable_reason.cache_clear()


def test_import_numconv_loads_no_cuda():
    code = ("import sys, numconv, numconv.ops, numconv.kernels.cpu; "
            "bad = sorted(m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda', "
            "'numconv.kernels.cuda'))); assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_missing_numba_cuda_is_named(monkeypatch, fresh_reason):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba_cuda" else real(name, *a))
    with pytest.raises(RuntimeError) as err:
        _device.kernels_for("cuda")
    message = str(err.value)
    assert "numba-cuda is not installed" in message and "\n" not in message
    assert _device.resolve_device("auto") == "cpu"


def test_no_gpu_gives_one_line(fresh_reason):
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed")
    if _device.cuda_available():
        pytest.skip("a GPU is usable here")
    with pytest.raises(RuntimeError) as err:
        _device.kernels_for("cuda")
    message = str(err.value)
    assert message.startswith("device 'cuda' is not available: ") and "\n" not in message
    assert "use device='cpu'" in message
    assert _device.resolve_device("auto") == "cpu"
    assert _device.resolve_device("cpu") == "cpu"


def test_gradcheck_cli_reports_the_reason(fresh_reason):
    if importlib.util.find_spec("numba_cuda") is not None and _device.cuda_available():
        pytest.skip("a GPU is usable here")
    from cli.main import main
    result = CliRunner().invoke(main, ["gradcheck", "--device", "cuda", "--op", "global_pool",
                                       "--fast"])
    assert result.exit_code != 0
    assert "device 'cuda' is not available" in result.output


# --------------------------------------------------------------------------- --device on the CLI

NO_DRIVER = "no NVIDIA driver was found (libcuda.so is not on the library path)"
COMMANDS = [["train-image", "--dataset", "digits"], ["train-text"], ["evaluate", "runs/none"],
            ["predict", "runs/none", "x.png"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_device_cuda_without_a_gpu_is_one_line_naming_why_and_the_fix(command, monkeypatch,
                                                                       tmp_path):
    monkeypatch.setattr(_device, "cuda_unavailable_reason", lambda: NO_DRIVER)
    result = CliRunner().invoke(_main(), command + ["--device", "cuda"] + _run_dir(command,
                                                                                  tmp_path))
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in result.output
    assert NO_DRIVER in line and "use --device cpu" in line, line
    assert not any(tmp_path.iterdir()), "nothing should run before the device is checked"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_bad_device_values_are_rejected(command, tmp_path):
    result = CliRunner().invoke(_main(), command + ["--device", "gpu"] + _run_dir(command,
                                                                                 tmp_path))
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--device'" in result.output and "'gpu'" in result.output


def test_library_configs_check_the_device():
    from numconv.text.train import TextConfig
    from numconv.train.image import ImageConfig
    with pytest.raises(ValueError, match="--device 'gpu' is unknown; use cpu, cuda or auto"):
        ImageConfig(device="gpu").resolve()
    with pytest.raises(ValueError, match="--device 'gpu' is unknown"):
        TextConfig(device="gpu").resolve()
    assert ImageConfig().resolve().device == "cpu" and TextConfig().resolve().device == "cpu"


def test_device_auto_without_a_gpu_trains_on_the_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(_device, "cuda_unavailable_reason", lambda: NO_DRIVER)
    (tmp_path / "data.csv").write_text("text,label\ngood film,pos\nbad film,neg\n" * 10)
    run = tmp_path / "run"
    result = CliRunner().invoke(_main(), [
        "train-text", "--dataset", str(tmp_path / "data.csv"), "--epochs", "1", "--maps", "2",
        "--embed-dim", "4", "--no-baseline", "--device", "auto", "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    assert "--device auto: running on cpu" in result.output
    import json
    assert json.loads((run / "config.json").read_text())["device"] == "cpu"
    for command in (["evaluate", str(run)], ["predict", str(run), "good film"]):
        result = CliRunner().invoke(_main(), command + ["--device", "auto"])
        assert result.exit_code == 0, result.output


def test_a_model_with_no_gpu_path_is_one_line(monkeypatch, tmp_path):
    # CUDA said to be usable: the model refuses to move before any array goes anywhere. Every
    # layer has a GPU path now, so two are made to say they have none.
    from numconv.models.lenet import MaskedConv2d, Subsampling
    for layer in (MaskedConv2d, Subsampling):
        monkeypatch.setattr(layer, "supports_cuda", False)
    monkeypatch.setattr(_device, "cuda_unavailable_reason", lambda: None)
    result = CliRunner().invoke(_main(), [
        "train-image", "--dataset", "digits", "--classic", "--limit", "64", "--epochs", "1",
        "--device", "cuda", "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    line = result.output.strip().splitlines()[-1]
    assert line == ("Error: --device cuda: MaskedConv2d, Subsampling has no CUDA path yet, so "
                    "this model cannot move to the GPU; use --device cpu"), line


def _main():
    from cli.main import main
    return main


def _run_dir(command, tmp_path):
    return ["--run-dir", str(tmp_path / "run")] if command[0].startswith("train") else []


def test_resuming_a_gpu_run_without_a_gpu_names_the_fix(monkeypatch, tmp_path):
    import json
    (tmp_path / "data.csv").write_text("text,label\ngood film,pos\nbad film,neg\n" * 10)
    run = tmp_path / "run"
    result = CliRunner().invoke(_main(), [
        "train-text", "--dataset", str(tmp_path / "data.csv"), "--epochs", "1", "--maps", "2",
        "--embed-dim", "4", "--no-baseline", "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    doc = json.loads((run / "config.json").read_text())
    doc.update(device="cuda", epochs=2)          # as if trained on a GPU, and not finished
    (run / "config.json").write_text(json.dumps(doc))
    monkeypatch.setattr(_device, "cuda_unavailable_reason", lambda: NO_DRIVER)
    result = CliRunner().invoke(_main(), ["train-text", "--resume", str(run)])
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert NO_DRIVER in line and "use --device cpu" in line, line
    result = CliRunner().invoke(_main(), ["train-text", "--resume", str(run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((run / "config.json").read_text())["device"] == "cpu"   # where it trained
