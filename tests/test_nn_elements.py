"""The per-element functions of the CUDA nn kernels (numconv.kernels.nn), compiled for the CPU with
numba.njit and run as plain Python, against the NumPy definitions in numconv.ops.nn: the same
source serves both devices, so it is checked on both (the GPU side in tests/cuda_sim and
tests/test_cuda_ptx.py)."""
import numpy as np
import pytest
from numba import njit

from numconv.kernels import nn as elements
from numconv.ops import nn as F
from kernel_helpers import assert_close

CPU = elements.compile_for(njit)
PY = {name: getattr(elements, name) for name in elements.__all__}


@pytest.fixture(params=["njit", "python"])
def f(request):
    return CPU if request.param == "njit" else PY


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_elements(f, dtype):
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal(40)).astype(dtype)
    dy = rng.standard_normal(40).astype(dtype)
    n = range(x.size)
    A, S = F.LECUN_A, F.LECUN_S
    y = F.tanh_forward(x, A, S)
    cases = [
        ([f["relu_element"](x, i) for i in n], F.relu_forward(x)),
        ([f["relu_grad_element"](dy, x, i) for i in n], F.relu_backward(dy, x)),
        ([f["tanh_element"](x, i, A, S) for i in n], y),
        ([f["tanh_grad_element"](dy, y, i, A, S) for i in n], F.tanh_backward(dy, y, A, S)),
        ([f["sigmoid_element"](x, i) for i in n], F.sigmoid_forward(x)),
        ([f["sigmoid_grad_element"](dy, y, i) for i in n], F.sigmoid_backward(dy, y)),
        ([f["hardtanh_element"](x, i) for i in n], F.hardtanh_forward(x)),
        ([f["hardtanh_grad_element"](dy, x, i) for i in n], F.hardtanh_backward(dy, x)),
    ]
    for k, (got, want) in enumerate(cases):
        assert_close(np.array(got, dtype), want, dtype, err_msg=f"case {k}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_piecewise_activations_match_their_numpy_definitions(dtype):
    """ReLU and hardtanh run as parallel Numba loops on the CPU: on views of 4-D arrays large
    enough to be split over threads they give exactly NumPy's maximum / clip / masked copies,
    NaN passing through the forward pass and the kinks (0; -1 and 1) taking the zero side."""
    rng = np.random.default_rng(2)
    x = (2 * rng.standard_normal((8, 6, 40, 36))).astype(dtype)
    x[0, 0, 0, :4] = [0, -1, 1, np.nan]
    x = x.transpose(0, 1, 3, 2)                      # a non-contiguous view
    dy = rng.standard_normal(x.shape).astype(dtype)
    y = F.relu_forward(x)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    np.testing.assert_array_equal(F.relu_backward(dy, y), np.where(y > 0, dy, 0))
    np.testing.assert_array_equal(F.hardtanh_forward(x), np.clip(x, -1, 1))
    np.testing.assert_array_equal(F.hardtanh_backward(dy, x),
                                  np.where((x > -1) & (x < 1), dy, 0))
    with pytest.raises(ValueError, match="shapes differ"):
        F.relu_backward(dy, y[:1])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")   # uint64 wraps
def test_dropout_elements_give_the_cpu_mask(f):
    key = np.uint64(f["dropout_key"](np.uint64(7), np.uint64(3)))   # njit hands back an int
    got = np.array([f["dropout_keep"](key, np.uint64(i), 0.6, 1 / 0.6) for i in range(50)])
    np.testing.assert_array_equal(got, F.dropout_mask((50,), 0.4, 7, 3, np.float64))


def test_batchnorm_and_lrn_elements(f):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 4))
    dy = rng.standard_normal(x.shape)
    gamma, beta = rng.uniform(0.5, 1.5, 5), rng.standard_normal(5)
    mean, var = F.batch_statistics(x)
    y, x_hat, inv = F.batchnorm_forward(x, gamma, beta, mean, var, 1e-5)
    got = np.array([f["batchnorm_element"](x, mean, inv, gamma, beta, *i)
                    for i in np.ndindex(*x.shape)]).reshape(x.shape + (2,))
    assert_close(got[..., 0], x_hat)
    assert_close(got[..., 1], y)
    for training in (True, False):
        dx, dg, db = F.batchnorm_backward(dy, x_hat, gamma, inv, training)
        m = x.size // x.shape[1]
        got = np.array([f["batchnorm_grad_element"](dy, x_hat, gamma, inv, dg, db, *i, m,
                                                    training) for i in np.ndindex(*x.shape)])
        assert_close(got.reshape(x.shape), dx)

    for size in (5, 4):
        y, s = F.lrn_forward(x, size, 0.1, 0.75, 2.0)
        got_s = np.array([f["lrn_denominator"](x, *i, size, 0.1, 2.0)
                          for i in np.ndindex(*x.shape)]).reshape(x.shape)
        assert_close(got_s, s)
        got_y = np.array([f["lrn_element"](x, s, *i, 0.75) for i in np.ndindex(*x.shape)])
        assert_close(got_y.reshape(x.shape), y)
        dx = F.lrn_backward(dy, x, s, size, 0.1, 0.75)
        got = np.array([f["lrn_grad_element"](dy, x, s, *i, size, 0.75, 2 * 0.1 * 0.75)
                        for i in np.ndindex(*x.shape)])
        assert_close(got.reshape(x.shape), dx)


def test_cross_entropy_rows(f):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((6, 4)) * 5
    logits[0] += 800
    labels = rng.integers(0, 4, 6)
    weights = np.array([0.0, 1, 1, 2, 0, 1])
    for w in (None, weights):
        total = 6.0 if w is None else w.sum()
        loss, want = F.softmax_cross_entropy(logits, labels, 0.1, w)
        d = np.empty_like(logits)
        rows = [f["cross_entropy_row"](d, logits, labels, weights, w is not None, n, 0.1, total)
                for n in range(6)]
        np.testing.assert_allclose(sum(rows) / total, loss, rtol=1e-12)
        assert_close(d, want)
    ties = np.array([[0.0, 1, 1], [2, 0, 2]])
    assert [f["argmax_row"](ties, n) for n in range(2)] == [1, 0]


def test_softmax_cross_entropy_against_numpy_and_bad_labels():
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal((40, 5)) * 20).astype(np.float32)
    logits[3] += 1e4                                      # log-sum-exp: no overflow
    labels = rng.integers(0, 5, 40)
    w = (rng.random(40) > 0.3).astype(np.float64)
    for smoothing, weights in ((0.0, None), (0.1, w)):
        loss, d = F.softmax_cross_entropy(logits, labels, smoothing, weights)
        z = logits.astype(np.float64)
        logp = z - z.max(1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(1, keepdims=True))
        target = np.full(z.shape, smoothing / 5)
        target[np.arange(40), labels] += 1 - smoothing
        ww = np.ones(40) if weights is None else weights
        np.testing.assert_allclose(loss, -(ww[:, None] * target * logp).sum() / ww.sum(),
                                   rtol=1e-7)        # summed by rows, then over rows
        assert d.dtype == np.float32
        assert_close(d, (np.exp(logp) - target) * (ww / ww.sum())[:, None])
    for bad in (np.full(40, 5), np.full(40, -1), labels[:3]):
        with pytest.raises(ValueError, match="labels must be 40 class indices in"):
            F.softmax_cross_entropy(logits, bad)


def test_batchnorm_counter_is_0d_as_in_pytorch_and_old_1d_checkpoints_load():
    """num_batches_tracked has PyTorch's shape () (an exported file matches torch's layout; on a
    GPU the counter stays on the host), and a state saved with it 1-d by earlier versions loads."""
    from numconv.nn.layers import BatchNorm2d
    bn = BatchNorm2d(3)
    assert bn.buffers["num_batches_tracked"].shape == ()
    bn.forward(np.ones((2, 3, 2, 2), np.float32))
    state = dict(bn.state_dict())
    assert int(state["num_batches_tracked"]) == 1
    state["num_batches_tracked"] = np.array([7], np.int64)       # the old layout
    bn.load_state_dict(state)
    assert int(bn.buffers["num_batches_tracked"]) == 7
