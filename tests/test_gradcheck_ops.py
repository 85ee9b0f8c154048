"""`numconv gradcheck --op`: the sweep reaches every CPU convolution kernel, and its large case,
checked by projections, still catches a wrong gradient."""
from click.testing import CliRunner

from cli.main import main
from numconv import gradcheck as gc
from numconv import ops
from numconv.kernels.cpu.conv import _conv1d_shifted, conv_kernel


def _large_cases(op):
    return [c for c in gc.sweep(op) if c.projections_only]


def test_the_sweep_reaches_the_taps_kernels_and_the_shifted_conv1d():
    for op in ("conv2d", "conv1d"):
        cases = _large_cases(op)
        assert len(cases) == 2                                  # correlate and convolve
        x, w = cases[0].inputs["x"], cases[0].inputs["w"]
        O, Cg = w.shape[:2]
        k = w.shape[2:]
        KH, KW = k if len(k) == 2 else (1,) + k
        # 'auto' leaves the direct kernels: the taps (2-D) or the shifted products (1-D, one row)
        assert conv_kernel(O, Cg, KH, KW, 1, 1, 1) == "taps" and x.shape[1] == Cg
        assert _conv1d_shifted(1 if len(k) == 1 else x.shape[2], KH, 1, 0, 1, 1) == (len(k) == 1)


def test_cli_gradcheck_conv2d_passes_every_configuration():
    result = CliRunner().invoke(main, ["gradcheck", "--op", "conv2d"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "22 of 22 configurations passed" in result.output


def test_a_wrong_weight_gradient_fails_the_large_case(monkeypatch):
    backward = ops.conv2d_backward_weight

    def off_by_a_little(*args, **kwargs):
        return backward(*args, **kwargs) * 1.001               # a 0.1% error

    monkeypatch.setattr(ops, "conv2d_backward_weight", off_by_a_little)
    case = _large_cases("conv2d")[0]
    results = {r.check: r for r in gc.check_case(case)}
    assert not results["grad w (vᵀJu)"].passed
    assert results["grad x (vᵀJu)"].passed and results["grad b (vᵀJu)"].passed
