"""The pool of recycled host buffers (numconv.ops._buffers): a buffer is handed out again only once
nothing refers to it, so recycling can never overwrite an array somebody still holds; the pool
keeps to its byte budget, drops the least recently used free buffers first, and can be emptied."""
import numpy as np
import pytest

from numconv import config, ops
from numconv.ops import nn as F
from numconv.ops import _buffers as buffers

MB = 1 << 20


@pytest.fixture(autouse=True)
def empty_pool(monkeypatch):
    monkeypatch.setattr(config, "CPU_BUFFER_MIN_BYTES", 1024)
    monkeypatch.setattr(config, "CPU_BUFFER_POOL_BYTES", 8 * MB)
    buffers.release()
    yield
    buffers.release()


def _address(a):
    return a.__array_interface__["data"][0]


def test_a_free_buffer_is_handed_out_again_and_a_held_one_never():
    a = buffers.empty((256, 64), np.float32)
    where = _address(a)
    b = buffers.empty((256, 64), np.float32)          # a is held: a second buffer
    assert _address(b) != where
    del a
    c = buffers.empty((256, 64), np.float32)          # a's buffer is free again
    assert _address(c) == where
    view = c[10:20]                                   # a view refers to its buffer
    del c
    d = buffers.empty((256, 64), np.float32)
    assert _address(d) not in (where, _address(b))
    view[...] = 7                                     # and it is still the view's own memory
    assert (view == 7).all()


def test_shape_and_dtype_must_match_and_small_arrays_are_left_alone():
    a = buffers.empty((256, 64), np.float32)
    where = _address(a)
    del a
    assert _address(buffers.empty((64, 256), np.float32)) != where      # same bytes, other shape
    assert _address(buffers.empty((256, 64), np.float64)) != where
    small = buffers.empty((16,), np.float32)                              # under MIN_BYTES
    assert buffers.pooled_bytes() == 2 * 256 * 64 * 4 + 256 * 64 * 8
    assert small.shape == (16,)
    z = buffers.zeros((256, 64), np.float32)                              # recycled, cleared
    assert _address(z) == where and not z.any()


def test_the_pool_keeps_to_its_budget_dropping_the_least_recently_used_free_buffer():
    held = buffers.empty((MB // 4, 4), np.float32)    # 4 MB, in use
    old = buffers.empty((MB // 8, 4), np.float32)     # 2 MB
    new = buffers.empty((MB // 8, 2, 2), np.float32)  # 2 MB: the pool is full
    new_at = _address(new)
    del old, new
    assert buffers.pooled_bytes() == 8 * MB
    third = buffers.empty((MB // 8, 1, 4), np.float32)    # 2 MB more: the older free one goes
    assert buffers.pooled_bytes() == 8 * MB
    assert ((MB // 8, 4), "<f4") not in buffers._POOL
    assert _address(buffers.empty((MB // 8, 2, 2), np.float32)) == new_at
    big = buffers.empty((3 * MB, 4), np.float32)          # over the budget: never pooled
    assert buffers.pooled_bytes() <= 8 * MB and big.nbytes > 8 * MB
    buffers.release()                                     # only buffers in use remain
    assert buffers.pooled_bytes() == held.nbytes + third.nbytes
    del held, third
    buffers.release()
    assert buffers.pooled_bytes() == 0


def test_no_pool_when_its_budget_is_zero(monkeypatch):
    monkeypatch.setattr(config, "CPU_BUFFER_POOL_BYTES", 0)
    a = buffers.empty((256, 64), np.float32)
    del a
    assert buffers.pooled_bytes() == 0
    b = buffers.empty((256, 64), np.float32)
    assert b.shape == (256, 64) and buffers.pooled_bytes() == 0 and not buffers._POOL


def test_kept_outputs_of_the_ops_are_never_overwritten():
    """Results a caller keeps (an evaluation collecting outputs, a layer holding its input for
    backward) stay what they were while the same ops run again and again."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 1, 5, 5)).astype(np.float32)
    xs = [rng.standard_normal((8, 1, 32, 32)).astype(np.float32) for _ in range(4)]
    kept, copies = [], []
    for x in xs:
        y = F.relu_forward(ops.conv2d(x, w))
        p, idx = ops.max_pool2d(y, 2, return_indices=True)
        dx = ops.max_pool2d_backward(np.ones_like(p), idx, y.shape, 2)
        kept.append((y, p, dx))
        copies.append(tuple(a.copy() for a in (y, p, dx)))
    assert buffers.pooled_bytes() > 0
    for got, want in zip(kept, copies):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    fresh = F.relu_forward(ops.conv2d(xs[0], w))
    np.testing.assert_array_equal(fresh, copies[0][0])
