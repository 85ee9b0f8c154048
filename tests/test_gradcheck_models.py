"""`numconv gradcheck --model`: whole scaled-down models, float64, vᵀJu projections with respect to
the input and every parameter, kink-aware; and the checker catches a wrong gradient."""
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from numconv import gradcheck as gc
from numconv import models
from numconv.models.lenet import Subsampling


def assert_all_pass(results, min_rows):
    failed = [r for r in results if not r.passed]
    assert not failed, "\n".join(f"{r.op} {r.label}: {r.detail}" for r in failed)
    assert len(results) >= min_rows
    assert any(r.check == "determinism" for r in results)


def test_cli_gradcheck_model_lenet5_both_variants():
    result = CliRunner().invoke(main, ["gradcheck", "--model", "lenet5"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "lenet5 (classic)" in result.output and "c3.weight" in result.output
    assert "28 of 28 checks passed" in result.output   # (input + 12 tensors + run twice) x 2


@pytest.mark.parametrize("name,depth,min_rows", [
    ("smallcnn", None, 10),      # input, 4 weight/bias pairs, run twice
    ("alexnet", None, 18),       # input, 8 weight/bias pairs, run twice
    ("vgg11", None, 24),
    ("googlenet", 1, 17),        # with aux classifiers; one projection per top-level block
    ("resnet18", None, 64),      # every tensor, batch norm included
    ("resnet20", 2, 16),         # per block
    ("plain20", 2, 16),
    ("resnet50", 2, 23),
])
def test_model_gradients(name, depth, min_rows):
    assert_all_pass(gc.run_models(name, group_depth=depth), min_rows)


def test_every_parameter_is_checked():
    check = gc.model_checks("resnet20")[0]
    labels = {r.label for r in gc.check_model(check, group_depth=None)}
    net = models.build_model("resnet20", initialize=False)
    assert labels == {n for n, _, _ in net.named_parameters()} | {"input",
                                                                   "forward + backward twice"}


def test_a_wrong_gradient_fails(monkeypatch):
    backward = Subsampling.backward

    def off_by_a_little(self, dy):
        dx = backward(self, dy)
        self.grads["weight"] *= 1.001          # a 0.1% error in one tensor's gradient
        return dx

    monkeypatch.setattr(Subsampling, "backward", off_by_a_little)
    classic = gc.model_checks("lenet5")[1]
    results = {r.label: r for r in gc.check_model(classic)}
    assert not results["s2.weight"].passed and not results["s4.weight"].passed
    assert results["c3.weight"].passed and results["input"].passed


def test_checks_are_float64_with_dropout_off():
    net = models.build_model("alexnet", input_size=67, width=1 / 32)
    gc.to_float64(net)
    assert all(p.dtype == np.float64 and g.dtype == np.float64
               for _, p, g in net.named_parameters())
    r = models.build_model("resnet20", width=0.25)
    gc.to_float64(r)
    assert r.bn1.buffers["running_mean"].dtype == np.float64
    assert r.bn1.buffers["num_batches_tracked"].dtype == np.int64


def test_kink_pattern_sees_relu_and_maxpool_decisions():
    net = models.build_model("lenet5")
    gc.to_float64(net)
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32))
    net.forward(x)
    base = gc._kink_pattern(net)
    assert len(base) == 6                        # 4 ReLUs, 2 max-pools
    net.forward(x)
    assert gc._same_pattern(base, gc._kink_pattern(net))
    net.forward(-x)
    assert not gc._same_pattern(base, gc._kink_pattern(net))


def test_cli_rejects_unknown_models_and_op_with_model():
    bad = CliRunner().invoke(main, ["gradcheck", "--model", "resnet9"])
    assert bad.exit_code != 0 and "'resnet9' is not a model" in bad.output
    both = CliRunner().invoke(main, ["gradcheck", "--model", "lenet5", "--op", "conv2d"])
    assert both.exit_code != 0 and "exclusive" in both.output
    depth = CliRunner().invoke(main, ["gradcheck", "--op", "conv2d", "--group-depth", "2"])
    assert depth.exit_code != 0 and "only with --model" in depth.output
