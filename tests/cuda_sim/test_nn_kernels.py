"""The CUDA twins of numconv.ops.nn and of the embedding kernels, under the CUDA simulator.

Each op runs through `numconv.ops.nn` twice: with NumPy arrays (the CPU path, the NumPy definition
of the op) and with device arrays (dispatched to numconv.kernels.cuda.nn); results must agree to
the dtype's tolerance, the dropout masks and the embedding gradient bit for bit. Block sizes are
patched small (conftest.py: 7 threads per block, 3 x 3 tiles), so every shape below spans several
blocks and tiles and ends in partial ones.
"""
import numpy as np
import pytest
from numba import cuda

from numconv.kernels.cuda import embedding as gpu_embedding
from numconv.kernels.cuda import nn as gpu
from numconv.nn import embedding as cpu_embedding
from numconv.ops import nn as F
from kernel_helpers import assert_bitwise_equal, assert_close

FLOATS = (np.float32, np.float64)


def _dev(*arrays):
    return [cuda.to_device(np.ascontiguousarray(a)) for a in arrays]


def _host(a):
    assert F.on_gpu(a), f"expected a device array, got {type(a).__name__}"
    return a.copy_to_host()


def _check(got, want, dtype, what):
    got = _host(got)
    assert got.dtype == np.asarray(want).dtype, what
    assert_close(got, want, dtype, err_msg=what)


@pytest.mark.parametrize("dtype", FLOATS)
def test_activations(dtype):
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal((3, 5, 4))).astype(dtype)
    x[0, 0, :2] = (-1.0, 1.0)                          # hardtanh's edges
    dy = rng.standard_normal(x.shape).astype(dtype)
    dx_, ddy = _dev(x, dy)
    y = F.relu_forward(x)
    _check(F.relu_forward(dx_), y, dtype, "relu")
    _check(F.relu_backward(ddy, cuda.to_device(y)), F.relu_backward(dy, y), dtype, "relu dx")
    for scale, slope in ((1.0, 1.0), (F.LECUN_A, F.LECUN_S)):
        y = F.tanh_forward(x, scale, slope)
        _check(F.tanh_forward(dx_, scale, slope), y, dtype, f"tanh {scale}")
        _check(F.tanh_backward(ddy, cuda.to_device(y), scale, slope),
               F.tanh_backward(dy, y, scale, slope), dtype, f"tanh dx {scale}")
    y = F.sigmoid_forward(x)
    _check(F.sigmoid_forward(dx_), y, dtype, "sigmoid")
    _check(F.sigmoid_backward(ddy, cuda.to_device(y)), F.sigmoid_backward(dy, y), dtype,
           "sigmoid dx")
    _check(F.hardtanh_forward(dx_), F.hardtanh_forward(x), dtype, "hardtanh")
    _check(F.hardtanh_backward(ddy, dx_), F.hardtanh_backward(dy, x), dtype, "hardtanh dx")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_and_spans_tiles(dtype, bias):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 7)).astype(dtype)       # 5 rows, 7 inputs, 4 outputs: 3x3 tiles
    w = rng.standard_normal((4, 7)).astype(dtype)       # leave partial tiles on every side
    b = rng.standard_normal(4).astype(dtype) if bias else None
    dy = rng.standard_normal((5, 4)).astype(dtype)
    d = _dev(x, w, dy)
    db_ = cuda.to_device(b) if bias else None
    _check(F.linear_forward(d[0], d[1], db_), F.linear_forward(x, w, b), dtype, "y")
    got = F.linear_backward(d[2], d[0], d[1])
    want = F.linear_backward(dy, x, w)
    for name, g, e in zip(("dx", "dw", "db"), got, want):
        _check(g, e, dtype, name)
    assert F.linear_backward(d[2], d[0], d[1], need_input=False)[0] is None


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(3, 4, 2, 3), (5, 4), (2, 3, 5)])
def test_batchnorm_train_and_eval(shape, dtype):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    C = shape[1]
    gamma = rng.uniform(0.5, 1.5, C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    d_x, d_dy, d_g, d_b = _dev(x, dy, gamma, beta)

    mean, var = F.batch_statistics(x)
    g_mean, g_var = F.batch_statistics(d_x)
    _check(g_mean, mean, np.float64, "mean")
    _check(g_var, var, np.float64, "var")

    for training in (True, False):
        stats = (mean, var) if training else (mean.astype(dtype), var.astype(dtype))
        y, x_hat, inv = F.batchnorm_forward(x, gamma, beta, *stats, 1e-5)
        gy, gx_hat, ginv = F.batchnorm_forward(d_x, d_g, d_b, *_dev(*stats), 1e-5)
        for name, g, e in (("y", gy, y), ("x_hat", gx_hat, x_hat), ("inv", ginv, inv)):
            _check(g, e, dtype, f"{name} training={training}")
        got = F.batchnorm_backward(d_dy, gx_hat, d_g, ginv, training)
        want = F.batchnorm_backward(dy, x_hat, gamma, inv, training)
        for name, g, e in zip(("dx", "dgamma", "dbeta"), got, want):
            _check(g, e, dtype, f"{name} training={training}")

    rm, rv = rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)
    d_rm, d_rv = _dev(rm, rv)
    count = x.size // C
    F.batchnorm_update_running(rm, rv, mean, var, 0.1, count)
    F.batchnorm_update_running(d_rm, d_rv, g_mean, g_var, 0.1, count)
    _check(d_rm, rm, dtype, "running mean")
    _check(d_rv, rv, dtype, "running var")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("size", [5, 4])
def test_local_response_norm(size, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 7, 2, 3)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    args = (size, 0.1, 0.75, 2.0)      # a large alpha, so the window sums matter
    y, s = F.lrn_forward(x, *args)
    gy, gs = F.lrn_forward(cuda.to_device(x), *args)
    _check(gy, y, dtype, "y")
    _check(gs, s, dtype, "s")
    dx = F.lrn_backward(dy, x, s, size, 0.1, 0.75)
    _check(F.lrn_backward(*_dev(dy, x, s), size, 0.1, 0.75), dx, dtype, "dx")


@pytest.mark.parametrize("dtype", FLOATS)
def test_dropout_masks_are_bit_identical(dtype):
    for seed, step, p in ((0, 0, 0.5), (12345, 77, 0.3), (2**40 + 3, 2**33, 0.9)):
        want = F.dropout_mask((3, 17), p, seed, step, dtype)
        got = F.dropout_mask((3, 17), p, seed, step, dtype, device="cuda")
        assert_bitwise_equal(_host(got), want, f"seed {seed}, step {step}")


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_cross_entropy(dtype):
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal((9, 5)) * 3).astype(dtype)
    logits[0] += 1000                                 # must not overflow
    labels = rng.integers(0, 5, 9)
    weights = rng.integers(0, 2, 9).astype(np.float64)
    weights[:2] = (0, 1)
    d_logits = cuda.to_device(logits)
    for smoothing in (0.0, 0.1):
        for w in (None, weights):
            loss, dlogits = F.softmax_cross_entropy(logits, labels, smoothing, w)
            g_loss, g_dlogits = F.softmax_cross_entropy(d_logits, labels, smoothing, w)
            assert isinstance(g_loss, float)
            np.testing.assert_allclose(g_loss, loss, rtol=1e-12)
            _check(g_dlogits, dlogits, dtype, f"smoothing {smoothing}, weights {w is not None}")
    ties = np.zeros((9, 5), dtype)
    ties[:, 2] = 1
    ties[3, 4] = 1                                    # a tie: the first maximum wins
    labels[:3] = 2
    for a in (logits, ties):
        assert F.count_correct(cuda.to_device(a), labels) == F.count_correct(a, labels)


def test_max_norm_constraint():
    from numconv.nn import Linear
    from numconv.text.models import max_norm_
    cpu, gpu = (Linear(7, 5, rng=np.random.default_rng(8)) for _ in range(2))
    cpu.params["weight"][:2] *= 10                       # two rows over the norm, three under
    gpu.params["weight"][...] = cpu.params["weight"]
    gpu.to("cuda")
    max_norm_(cpu, 3.0)
    max_norm_(gpu, 3.0)
    _check(gpu.params["weight"], cpu.params["weight"], np.float32, "max-norm rows")


def test_array_plumbing():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2, 3, 5)).astype(np.float32)
    b = rng.standard_normal((2, 4, 5)).astype(np.float32)
    c = rng.standard_normal((2, 3, 5)).astype(np.float32)
    da, db, dc = _dev(a, b, c)
    assert_bitwise_equal(_host(gpu.concat_channels([da, db, dc])), np.concatenate([a, b, c], 1))
    assert_bitwise_equal(_host(gpu.split_channels(db, 1, 2)), b[:, 1:3])
    assert_bitwise_equal(_host(gpu.transpose(db)), b.transpose(0, 2, 1))
    assert_bitwise_equal(_host(F.add(da, dc)), a + c)
    assert_bitwise_equal(_host(F.multiply(da, dc)), a * c)
    assert_bitwise_equal(_host(F.scale(da, 0.3)), F.scale(a, 0.3))
    acc = cuda.to_device(a)
    F.accumulate(acc, dc)
    assert_bitwise_equal(_host(acc), a + c)
    gpu.fill_(acc, 0)
    assert not _host(acc).any()
    assert_bitwise_equal(_host(gpu.zeros((3, 4), np.float64)), np.zeros((3, 4)))
    y = cuda.to_device(b)
    gpu.fill_outside_(y, np.array([1, 3]), 1, 1, -np.inf)   # keep t in [1, length + 1)
    want = b.copy()
    want[0, :, [0, 2, 3, 4]] = -np.inf
    want[1, :, [0, 4]] = -np.inf
    assert_bitwise_equal(_host(y), want)


def test_embedding_lookup_and_gradient_are_bit_identical():
    rng = np.random.default_rng(6)
    V, D = 11, 4
    weight = rng.standard_normal((V, D)).astype(np.float32)
    ids = rng.integers(0, V, (3, 6))
    ids[0, :4] = 5                                   # a word repeated: one long segment
    dout = rng.standard_normal((3, 6, D)).astype(np.float32)
    d_w = cuda.to_device(weight)
    out = cpu_embedding.embedding_forward(ids, d_w)
    assert_bitwise_equal(_host(out), weight[ids])
    start = rng.standard_normal((V, D)).astype(np.float32)
    want = cpu_embedding.embedding_backward(dout, ids, V, dweight=start.copy())
    got = cuda.to_device(start)
    cpu_embedding.embedding_backward(cuda.to_device(dout), ids, V, dweight=got)
    assert_bitwise_equal(_host(got), want)
    # the launcher also takes host arrays, copying the accumulator in and out
    host = start.copy()
    flat = ids.reshape(-1)
    order = np.argsort(flat, kind="stable")
    cut = np.flatnonzero(np.diff(flat[order])) + 1
    starts = np.concatenate([[0], cut, [flat.size]]).astype(np.int64)
    gpu_embedding.embedding_backward(host, dout.reshape(-1, D), order, starts,
                                     flat[order][starts[:-1]])
    assert_bitwise_equal(host, want)


def test_reductions_run_twice_to_the_same_bits():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    dy = rng.standard_normal((4, 3, 5)).astype(np.float32)
    logits = rng.standard_normal((6, 4)).astype(np.float32)
    runs = []
    for _ in range(2):
        d_x, d_dy = _dev(x, dy)
        mean, var = F.batch_statistics(d_x)
        gamma = cuda.to_device(np.ones(3, np.float32))
        y, x_hat, inv = F.batchnorm_forward(d_x, gamma, gamma, mean, var, 1e-5)
        dx, dg, db = F.batchnorm_backward(d_dy, x_hat, gamma, inv, True)
        lin = F.linear_backward(cuda.to_device(logits), cuda.to_device(logits),
                                cuda.to_device(logits[:4]))
        loss, dl = F.softmax_cross_entropy(cuda.to_device(logits), np.arange(6) % 4)
        runs.append([_host(a) for a in (mean, var, y, dx, dg, db, *lin, dl)] + [np.array(loss)])
    for i, (a, b) in enumerate(zip(*runs)):
        assert_bitwise_equal(a, b, f"output {i}")


def test_mixing_host_and_device_arrays_is_a_clear_error():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"x on the GPU but w on the host.*model.to\('cuda'\)"):
        F.linear_forward(cuda.to_device(x), x, None)
    with pytest.raises(ValueError, match="dy on the GPU but y on the host"):
        F.relu_backward(cuda.to_device(x), x)
