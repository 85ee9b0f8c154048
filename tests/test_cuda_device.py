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
