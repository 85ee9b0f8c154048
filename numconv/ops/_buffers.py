"""Recycled host buffers for the large arrays that every training step allocates afresh.

A training step allocates the same large arrays every time: each layer's output, each input
gradient. Freshly allocated memory of a few megabytes comes from the operating system (glibc
maps it, or hands back memory it has just trimmed), and the first write to each page of it is a
page fault: on LeNet-5 at batch 256 that was a third of the step. This pool keeps the buffers the
ops hand out and gives one back out again once nothing refers to it any more, so that steady-state
training writes into memory it already owns.

A buffer is free when the pool holds the only reference to it: no array, view (a view refers to
the buffer as its base), layer attribute or caller's variable refers to it. That is read from
the reference count, compared with the count of a buffer known to be free, measured the same way
when this module loads; a buffer anything still refers to is never handed out again. The pool
holds at most config.CPU_BUFFER_POOL_BYTES of buffers (the free ones least recently handed out
are dropped first); arrays smaller than config.CPU_BUFFER_MIN_BYTES are left to the allocator,
which keeps them in its own free lists anyway. `release()` drops every free buffer.

Contents are whatever the last user wrote (as np.empty's are undefined); `zeros` clears them.
"""
import math
import sys
import threading

import numpy as np

from numconv import config

_LOCK = threading.Lock()
_POOL = {}        # (shape, dtype) -> [buffers], each handed out at least once
_TICK = {}        # id(buffer) -> when it was last handed out (a counter)
_CLOCK = [0]
_BYTES = [0]


def _refs(bufs, i):
    """The reference count of bufs[i], read the one way the free test uses."""
    return sys.getrefcount(bufs[i])


_FREE = _refs([np.empty(1)], 0)      # the count of a buffer only the pool holds


def empty(shape, dtype):
    """An uninitialised host array of `shape` and `dtype`: a free pooled buffer of that shape and
    dtype when there is one, else a new one (pooled when it is large enough)."""
    dtype = np.dtype(dtype)
    shape = tuple(map(int, shape))
    nbytes = math.prod(shape) * dtype.itemsize
    if not config.CPU_BUFFER_POOL_BYTES or nbytes < config.CPU_BUFFER_MIN_BYTES:
        return np.empty(shape, dtype)
    key = (shape, dtype.str)
    with _LOCK:
        bufs = _POOL.get(key, [])
        _CLOCK[0] += 1
        for i in range(len(bufs)):
            if _refs(bufs, i) == _FREE:
                _TICK[id(bufs[i])] = _CLOCK[0]
                return bufs[i]
        buf = np.empty(shape, dtype)
        if nbytes <= config.CPU_BUFFER_POOL_BYTES:
            _evict(config.CPU_BUFFER_POOL_BYTES - nbytes)
            if _BYTES[0] + nbytes <= config.CPU_BUFFER_POOL_BYTES:
                _POOL.setdefault(key, []).append(buf)
                _TICK[id(buf)] = _CLOCK[0]
                _BYTES[0] += nbytes
        return buf


def zeros(shape, dtype):
    """`empty`, cleared."""
    out = empty(shape, dtype)
    out[...] = 0
    return out


def _evict(limit):
    """Drop free buffers, least recently handed out first, until the pool holds at most `limit`
    bytes (or no free buffer is left). Called with the lock held."""
    if _BYTES[0] <= limit:
        return
    free = sorted(((_TICK[id(bufs[i])], key, i) for key, bufs in _POOL.items()
                   for i in range(len(bufs)) if _refs(bufs, i) == _FREE))
    drop = {}
    for _, key, i in free:
        if _BYTES[0] <= limit:
            break
        drop.setdefault(key, set()).add(i)
        _BYTES[0] -= _POOL[key][i].nbytes
    for key, idx in drop.items():
        for i in idx:
            _TICK.pop(id(_POOL[key][i]), None)
        _POOL[key] = [b for i, b in enumerate(_POOL[key]) if i not in idx]
        if not _POOL[key]:
            del _POOL[key]


def release():
    """Drop every free buffer (the pool keeps those still in use until they are free)."""
    with _LOCK:
        _evict(0)


def pooled_bytes():
    """Bytes of buffers the pool holds, free or in use."""
    return _BYTES[0]
