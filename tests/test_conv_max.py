"""conv1d followed by max over positions (Kim's max-over-time pooling), its backward from the
winners alone: ops.conv1d_max_backward against the dense composition (global_pool_backward, then
the three conv1d gradients), the reference, finite differences, thread counts and bad input; and
the Kim CNN that uses it against the dense path it replaced."""
import numba
import numpy as np
import pytest

import numconv as nc
from kernel_helpers import FLOATS, assert_bitwise_equal, assert_close
from numconv.text.models import KimCNN
from numconv.text.train import pad_batch

CONFIGS = [
    dict(N=3, C=5, L=11, O=4, K=3, stride=1, padding=0, dilation=1),
    dict(N=2, C=3, L=9, O=5, K=2, stride=2, padding=1, dilation=1),
    dict(N=4, C=2, L=12, O=3, K=3, stride=1, padding="same", dilation=2),
    dict(N=2, C=4, L=7, O=6, K=3, stride=1, padding="full", dilation=1),
    dict(N=1, C=1, L=5, O=1, K=5, stride=1, padding=0, dilation=1),       # one window
    dict(N=2, C=3, L=6, O=2, K=1, stride=3, padding=((2, 0),), dilation=1),
]


def _case(cfg, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((cfg["N"], cfg["C"], cfg["L"])).astype(dtype)
    w = rng.standard_normal((cfg["O"], cfg["C"], cfg["K"])).astype(dtype)
    opts = {k: cfg[k] for k in ("stride", "padding", "dilation")}
    y = nc.conv1d(x, w, **opts)
    _, idx = nc.global_pool(y, "max", return_indices=True)
    dm = rng.standard_normal(idx.shape).astype(dtype)
    dm[0, 0] = 0                       # a unit that ReLU switched off: no gradient at all
    return x, w, opts, y, idx, dm


def _dense(x, w, opts, y, idx, dm):
    dy = nc.global_pool_backward(dm, idx, y.shape, "max")
    return (nc.conv1d_backward_input(dy, w, x.shape, **opts),
            nc.conv1d_backward_weight(dy, x, w.shape[2], **opts),
            nc.conv1d_backward_bias(dy))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"K{c['K']}s{c['stride']}p{c['padding']}")
@pytest.mark.parametrize("device", ["cpu", "reference"])
def test_equals_the_dense_backward(cfg, dtype, device):
    x, w, opts, y, idx, dm = _case(cfg, dtype)
    got = nc.conv1d_max_backward(dm, idx, x, w, device=device, **opts)
    for g, want, name in zip(got, _dense(x, w, opts, y, idx, dm), ("dx", "dw", "db")):
        assert g.shape == want.shape and g.dtype == want.dtype, name
        assert_close(g, want, dtype, err_msg=name)
    assert not got[1][0].any() or dm[:, 0].any()


def test_channels_last_input_is_read_in_place_and_dx_comes_back_channels_last():
    rng = np.random.default_rng(1)
    xt = rng.standard_normal((3, 10, 4)).astype(np.float32)       # (N, L, C)
    x = xt.transpose(0, 2, 1)                                      # seen as (N, C, L)
    w = rng.standard_normal((5, 4, 3)).astype(np.float32)
    y = nc.conv1d(x, w)
    _, idx = nc.global_pool(y, "max", return_indices=True)
    dm = rng.standard_normal(idx.shape).astype(np.float32)
    dx, dw, db = nc.conv1d_max_backward(dm, idx, x, w)
    assert dx.shape == x.shape and dx.transpose(0, 2, 1).flags.c_contiguous
    want = nc.conv1d_max_backward(dm, idx, np.ascontiguousarray(x), w)
    for a, b in zip((dx, dw, db), want):
        assert_bitwise_equal(np.ascontiguousarray(a), np.ascontiguousarray(b))


def test_ties_send_the_gradient_to_the_first_window_like_the_pool():
    x = np.zeros((1, 1, 6), np.float64)
    x[0, 0, [1, 4]] = 1.0                        # two equal windows for a width-1 filter
    w = np.ones((1, 1, 1))
    y = nc.conv1d(x, w)
    _, idx = nc.global_pool(y, "max", return_indices=True)
    dx, dw, db = nc.conv1d_max_backward(np.array([[2.0]]), idx, x, w)
    np.testing.assert_array_equal(dx[0, 0], [0, 2, 0, 0, 0, 0])
    assert dw[0, 0, 0] == 2.0 and db[0] == 2.0


def test_finite_differences_float64():
    """d/d(x, w, b) of <dm, max_t conv1d(x, w, b)>, by central differences, inputs drawn so that
    no probe changes a winner."""
    rng = np.random.default_rng(2)
    opts = dict(stride=2, padding=1, dilation=2)
    while True:
        x, w, b = rng.standard_normal((2, 3, 10)), rng.standard_normal((4, 3, 3)), \
            rng.standard_normal(4)
        s = np.sort(nc.conv1d(x, w, b, **opts), axis=2)
        if (s[:, :, -1] - s[:, :, -2]).min() > 1e-3:
            break
    dm = rng.standard_normal((2, 4))

    def f(x, w, b):
        return float((nc.global_pool(nc.conv1d(x, w, b, **opts), "max") * dm).sum())

    _, idx = nc.global_pool(nc.conv1d(x, w, b, **opts), "max", return_indices=True)
    grads = nc.conv1d_max_backward(dm, idx, x, w, **opts)
    eps = 1e-6
    for k, (a, g) in enumerate(zip((x, w, b), grads)):
        num = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            args = [x.copy(), w.copy(), b.copy()]
            args[k][i] += eps
            hi = f(*args)
            args[k][i] -= 2 * eps
            num[i] = (hi - f(*args)) / (2 * eps)
        np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
@pytest.mark.parametrize("dtype", FLOATS)
def test_bit_identical_across_thread_counts_and_repeats(dtype, restore_threads):
    x, w, opts, y, idx, dm = _case(dict(N=9, C=7, L=20, O=11, K=4, stride=1, padding=2,
                                        dilation=1), dtype, seed=3)
    runs = []
    for n in (1, 2, 2):
        numba.set_num_threads(n)
        runs.append(nc.conv1d_max_backward(dm, idx, x, w, **opts))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert_bitwise_equal(np.ascontiguousarray(a), np.ascontiguousarray(b))


def _errs(**changes):
    x, w, opts, y, idx, dm = _case(CONFIGS[0], np.float32)
    args = dict(dm=dm, idx=idx, x=x, w=w)
    args.update(changes)
    return nc.conv1d_max_backward(args["dm"], args["idx"], args["x"], args["w"], **opts)


@pytest.mark.parametrize("changes,kind,words", [
    (dict(x=np.zeros((3, 5), np.float32)), ValueError, "x must have 3 dimensions"),
    (dict(w=np.zeros((4, 6, 3), np.float32)), ValueError, "channel mismatch"),
    (dict(x=np.zeros((3, 5, 11), np.int64)), TypeError, "float32 or float64"),
    (dict(w=np.zeros((4, 5, 3))), TypeError, "use one dtype"),
    (dict(dm=np.zeros((3, 5), np.float32)), ValueError, "dm has shape (3, 5)"),
    (dict(idx=np.zeros((3, 4))), ValueError, "integer winner positions"),
    (dict(idx=np.full((3, 4), 9)), ValueError, "outside the convolution's 9 outputs"),
    (dict(idx=np.full((3, 4), -1)), ValueError, "outside"),
    (dict(w=np.zeros((4, 5, 12), np.float32)), ValueError, "kernel"),
])
def test_bad_input_is_named(changes, kind, words):
    with pytest.raises(kind, match=None) as err:
        _errs(**changes)
    assert words in str(err.value), str(err.value)


@pytest.mark.parametrize("variant", ["rand", "non-static", "multichannel"])
def test_kim_cnn_gradients_equal_the_dense_path(variant):
    """The Kim CNN's CPU backward (winners only) against global_pool_backward + Conv1d.backward,
    the path it replaced, on every parameter."""
    rng = np.random.default_rng(4)
    pre = rng.standard_normal((40, 6)).astype(np.float32)
    m = KimCNN(40, 3, embed_dim=6, widths=(2, 3), maps=5, variant=variant,
               pretrained=None if variant == "rand" else pre, seed=1)
    batch = pad_batch([rng.integers(2, 40, n) for n in (1, 4, 9, 3)], m.pad)
    m.eval()
    dlogits = rng.standard_normal((4, 3)).astype(np.float32)
    m.zero_grad()
    m.forward(batch)
    m.backward(dlogits)
    sparse = {n: g.copy() for n, _, g in m.named_parameters()}

    m.zero_grad()
    m.forward(batch)
    dh = nc.ops.nn.relu_backward(m.dropout.backward(m.fc.backward(dlogits)), m._h)
    dx = None
    for i, (conv, (shape, idx)) in enumerate(zip(m.convs(), m._pool)):
        dpool = np.ascontiguousarray(dh[:, i * m.maps:(i + 1) * m.maps])
        d = conv.backward(nc.global_pool_backward(dpool, idx, shape, "max"))
        dx = d if dx is None else dx + d
    m.embedding.backward(np.ascontiguousarray(dx[:, :6].transpose(0, 2, 1)))
    dense = {n: g for n, _, g in m.named_parameters()}
    assert sparse.keys() == dense.keys()
    for name in sparse:
        assert_close(sparse[name], dense[name], np.float32, err_msg=name)


def test_gradcheck_command_checks_the_op():
    from click.testing import CliRunner
    from cli.main import main
    result = CliRunner().invoke(main, ["gradcheck", "--op", "conv1d_max"])
    assert result.exit_code == 0, result.output
    assert "6 of 6 configurations passed" in result.output, result.output
