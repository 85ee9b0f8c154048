"""Embedding: a lookup table of word vectors, its gradient gathered deterministically.

Forward is a row lookup, out[n, t] = weight[ids[n, t]]. The gradient of the table is the dense
one-hot product dweight = onehot(ids)^T @ dout, but computed without the matrix and without
scatter-adds: the token positions are grouped by word id (a counting sort, so each word's positions
keep their order; numconv.kernels.cpu.windows.group_ids), each distinct word is one segment, and
each parallel task sums one segment into its own row. No two tasks write the same row and every row is summed in a fixed order, so the
result is bit-identical from run to run and whatever the thread count (STYLE.md rule 4).

On the GPU (a table that is a device array) the same segments drive the CUDA kernels of
`numconv.kernels.cuda.embedding`: the ids come with the batch from the host, so they are checked and
sorted there, and only the segments travel.

Shapes: ids (N, T) integers in [0, V); weight (V, D); out (N, T, D).
"""
import importlib

import numpy as np
from numba import njit, prange

from numconv.kernels.cpu.windows import group_ids
from numconv.nn.module import Module
from numconv.ops import _buffers as buffers
from numconv.ops._device import kernels_for
from numconv.ops.nn import on_gpu

# --------------------------------------------------------------------------- reference (definition)


def embedding_backward_reference(dout, ids, num_embeddings):
    """The definition: dweight = onehot(ids)^T @ dout, as a dense matrix product (slow, obvious)."""
    flat = ids.reshape(-1)
    onehot = np.zeros((flat.size, num_embeddings), dtype=dout.dtype)
    onehot[np.arange(flat.size), flat] = 1
    return onehot.T @ dout.reshape(flat.size, -1)


# --------------------------------------------------------------------------------------- kernels

@njit(parallel=True, cache=True)
def _embedding_forward(out, weight, ids):
    """out (M, D) = weight[ids] for flat ids (M,)."""
    for m in prange(ids.shape[0]):
        out[m, :] = weight[ids[m], :]


@njit(parallel=True, cache=True)
def _embedding_backward(dweight, dout, order, starts, rows):
    """dweight[rows[s]] = sum of dout[order[j]] for j in segment s; one task per segment (row)."""
    D = dout.shape[1]
    for s in prange(rows.shape[0]):
        r = rows[s]
        for j in range(starts[s], starts[s + 1]):
            src = order[j]
            for d in range(D):
                dweight[r, d] += dout[src, d]


# -------------------------------------------------------------------------------------- public ops

def _gpu():
    kernels_for("cuda")
    return importlib.import_module("numconv.kernels.cuda.embedding")


def _check_ids(ids, num_embeddings):
    if on_gpu(ids):
        raise TypeError("ids must be a NumPy array: they are checked and sorted on the host (where "
                        "the batch comes from) before the lookup; pass the batch's ids as loaded")
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"ids must be an integer array of word indices, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= num_embeddings):
        raise ValueError(f"ids hold word indices outside [0, {num_embeddings}) (min {ids.min()}, "
                         f"max {ids.max()}); encode text with the vocabulary the table was "
                         f"built for")
    return np.ascontiguousarray(ids, dtype=np.int64)


def embedding_forward(ids, weight):
    """ids (...) integers, weight (V, D) -> out (..., D)."""
    ids = _check_ids(ids, weight.shape[0])
    if on_gpu(weight):
        from numconv.nn import device
        out = device.empty((ids.size, weight.shape[1]), weight.dtype)
        _gpu().embedding_forward(out, weight, ids.reshape(-1))
        return out.reshape(ids.shape + (weight.shape[1],))
    weight = np.ascontiguousarray(weight)
    out = buffers.empty((ids.size, weight.shape[1]), weight.dtype)
    _embedding_forward(out, weight, ids.reshape(-1))
    return out.reshape(ids.shape + (weight.shape[1],))


def embedding_backward(dout, ids, num_embeddings, dweight=None):
    """dout (..., D), ids (...) -> dweight (V, D), added into `dweight` when it is given."""
    ids = _check_ids(ids, num_embeddings)
    flat = ids.reshape(-1)
    gpu = on_gpu(dout)
    if gpu:
        from numconv.nn import device
        device.same_place(dout=dout, dweight=dweight)
        dout = dout.reshape(flat.size, dout.size // max(flat.size, 1))
        if dweight is None:
            dweight = device.zeros((num_embeddings, dout.shape[1]), dout.dtype)
    else:
        dout = np.ascontiguousarray(dout).reshape(flat.size, -1)
        if dweight is None:
            dweight = np.zeros((num_embeddings, dout.shape[1]), dtype=dout.dtype)
    rows, _, order, starts = group_ids(flat, num_embeddings)
    (_gpu().embedding_backward if gpu else _embedding_backward)(dweight, dout, order, starts, rows)
    return dweight


# ----------------------------------------------------------------------------------------- layer

class Embedding(Module):
    """ids (N, T) -> vectors (N, T, D).

    `frozen=True` keeps the table as a buffer: saved with the model, never trained (Kim's 'static'
    channel). `padding_idx` names a row that stays as it was (zero, for Kim's padding word): its
    gradient is dropped. `weight` gives the initial table (pretrained vectors); otherwise the rows
    are drawn from U[-init_scale, init_scale]."""

    def __init__(self, num_embeddings, embedding_dim, weight=None, frozen=False, padding_idx=None,
                 init_scale=0.25, rng=None, dtype=np.float32):
        super().__init__()
        if weight is None:
            rng = rng if rng is not None else np.random.default_rng(0)
            weight = rng.uniform(-init_scale, init_scale, (num_embeddings, embedding_dim))
        weight = np.array(weight, dtype=dtype)
        if weight.shape != (num_embeddings, embedding_dim):
            raise ValueError(f"embedding weight has shape {weight.shape}, expected "
                             f"({num_embeddings}, {embedding_dim})")
        if padding_idx is not None:
            weight[padding_idx] = 0
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.frozen, self.padding_idx = frozen, padding_idx
        if frozen:
            self.add_buffer("weight", weight)
        else:
            self.add_param("weight", weight)
        self._ids = None

    @property
    def weight(self):
        return self.buffers["weight"] if self.frozen else self.params["weight"]

    def forward(self, ids):
        self._ids = ids
        return embedding_forward(ids, self.weight)

    def backward(self, dy):
        if not self.frozen:
            g = self.grads["weight"]
            embedding_backward(dy, self._ids, self.num_embeddings, dweight=g)
            if self.padding_idx is not None:
                g[self.padding_idx] = 0
        return None   # ids have no gradient

    def backward_rows(self, rows, drows):
        """Add the gradient drows (R, D) of the distinct table rows `rows` (R,) (each row at most
        once, so no two updates meet), as a layer that multiplies each distinct id once computes
        it (the window tagger's products by id)."""
        if self.frozen:
            return
        g = self.grads["weight"]
        g[rows] += drows
        if self.padding_idx is not None:
            g[self.padding_idx] = 0

    def out_shape(self, in_shape):
        return tuple(in_shape) + (self.embedding_dim,)
