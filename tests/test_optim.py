"""Optimisers follow PyTorch's update rules; schedules give the published learning rates."""
import math

import numpy as np
import pytest

from numconv.optim import Adadelta, Adam, SGD, Schedule, make_optimizer

torch = pytest.importorskip("torch")


def _run(ours_factory, torch_factory, steps=5, seed=0):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(steps)]
    p = p0.copy()
    g = np.zeros_like(p)
    opt = ours_factory([("w", p, g)])
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = torch_factory([tp])
    for gr in grads:
        g[...] = gr
        opt.step()
        tp.grad = torch.tensor(gr)
        topt.step()
    return p, tp.detach().numpy()


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 5e-4),
                                                  (0.9, True, 1e-4)])
def test_sgd_matches_torch(momentum, nesterov, wd):
    ours, ref = _run(lambda ps: SGD(ps, 0.1, momentum, nesterov, wd),
                     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=momentum, nesterov=nesterov,
                                                weight_decay=wd))
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_adam_matches_torch():
    ours, ref = _run(lambda ps: Adam(ps, 1e-2, weight_decay=1e-3),
                     lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-3))
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_adadelta_matches_torch():
    ours, ref = _run(lambda ps: Adadelta(ps, 1.0, rho=0.95, eps=1e-6),
                     lambda ps: torch.optim.Adadelta(ps, lr=1.0, rho=0.95, eps=1e-6))
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_optimizer_state_round_trip():
    rng = np.random.default_rng(1)
    p = rng.standard_normal(5)
    g = rng.standard_normal(5)
    a = SGD([("w", p, g)], 0.1, 0.9)
    a.step()
    state = a.state_dict()
    p2 = p.copy()
    b = SGD([("w", p2, g)], 0.1, 0.9)
    b.load_state_dict(state)
    a.step()
    b.step()
    np.testing.assert_array_equal(p, p2)


def test_unknown_optimizer_and_bad_state():
    with pytest.raises(ValueError, match="optimizer 'rmsprop' is unknown"):
        make_optimizer("rmsprop", [], 0.1)
    opt = SGD([("w", np.zeros(2), np.zeros(2))], 0.1, 0.9)
    with pytest.raises(ValueError, match="parameter 'v'"):
        opt.load_state_dict({"steps": np.array(1), "v/momentum": np.zeros(2)})


def test_schedules():
    s = Schedule("step", 0.1, 90, step_size=30, gamma=0.1)
    assert s.lr(0) == pytest.approx(0.1) and s.lr(30) == pytest.approx(0.01)
    assert s.lr(89.5) == pytest.approx(0.001)
    c = Schedule("cosine", 0.1, 10)
    assert c.lr(0) == pytest.approx(0.1) and c.lr(5) == pytest.approx(0.05)
    assert c.lr(10) == pytest.approx(0.0, abs=1e-12)
    w = Schedule("constant", 0.1, 10, warmup_epochs=2)
    assert w.lr(0) == pytest.approx(0.01) and w.lr(1) == pytest.approx(0.055)
    assert w.lr(2) == pytest.approx(0.1)
    p = Schedule("plateau", 0.1, 10, factor=0.5, patience=1)
    for metric in (0.5, 0.6, 0.6, 0.6):
        p.end_epoch(metric)
    assert p.lr(4) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="schedule 'linear' is unknown"):
        Schedule("linear", 0.1, 10)
    with pytest.raises(ValueError, match="learning rate must be > 0"):
        Schedule("step", 0.0, 10)
    assert math.isfinite(Schedule("cosine", 0.1, 0).lr(0))


def test_multistep_schedule():
    s = Schedule("multistep", 0.1, 182, gamma=0.1, milestones=[91, 136])
    assert [s.lr(e) for e in (0, 90.9, 91, 135, 136, 181)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    le = Schedule("multistep", 5e-4, 20, milestones=[2, 5, 8, 12],
                  lr_values=[5e-4, 2e-4, 1e-4, 5e-5, 1e-5])
    assert [le.lr(e) for e in (0, 2, 5, 8, 12, 19)] == pytest.approx(
        [5e-4, 2e-4, 1e-4, 5e-5, 1e-5, 1e-5])
    with pytest.raises(ValueError, match="needs milestones"):
        Schedule("multistep", 0.1, 10)
    with pytest.raises(ValueError, match="one rate per interval"):
        Schedule("multistep", 0.1, 10, milestones=[5], lr_values=[0.1])


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, 0.1, 0.9, True, 1e-4),
                                  lambda ps: Adam(ps, 1e-2, weight_decay=1e-3),
                                  lambda ps: Adadelta(ps, 1.0)])
def test_parallel_update_equals_serial_and_keeps_shapes(make, monkeypatch):
    """Large parameters are updated by a parallel loop, small ones by a serial one: the same
    element-wise arithmetic, so the results are bit-identical; state keeps the parameter's shape."""
    from numconv.kernels import optim as kernels
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal((3, 7, 5)).astype(np.float32)
    grads = rng.standard_normal((3, 3, 7, 5)).astype(np.float32)
    out = []
    for threshold in (1, 10 ** 9):
        monkeypatch.setattr(kernels, "PARALLEL_MIN", threshold)
        p, g = p0.copy(), np.zeros_like(p0)
        opt = make([("w", p, g)])
        for gr in grads:
            g[...] = gr
            opt.step()
        assert all(a.shape == p.shape for k, a in opt.state_dict().items() if k != "steps")
        out.append(p)
    assert out[0].dtype == np.float32
    np.testing.assert_array_equal(out[0], out[1])


def test_non_contiguous_parameter_is_refused():
    p = np.zeros((4, 6))[:, ::2]
    with pytest.raises(ValueError, match="not a contiguous array"):
        SGD([("w", p, np.zeros_like(p))], 0.1).step()
