"""CUDA twins of the embedding kernels in `numconv.nn.embedding`: the row lookup and the gathered,
deterministic table gradient.

The gradient uses the CPU's segments: the token positions sorted by word id (a stable sort), one
segment per distinct word. The sort runs on the host, where the ids already are (they arrive with
the batch, and `numconv.nn.embedding` checks their range there); only `order`, `starts` and `rows`
go to the device. One thread per (segment, feature) then adds its segment's rows into its own
element of dweight, in the segment's order: no two threads write one element, no atomics, and the
same additions in the same order as the CPU kernel, so the two agree bit for bit.

Shapes: ids (M,) flat; weight and dweight (V, D); out and dout (M, D).
"""
from numba import cuda

from numconv.kernels.cuda import _launch


@cuda.jit
def _embedding_forward(out, weight, ids):
    t = cuda.grid(1)
    if t < out.size:
        D = out.shape[1]
        m = t // D
        out[m, t - m * D] = weight[ids[m], t - m * D]


@cuda.jit
def _embedding_backward(dweight, dout, order, starts, rows):
    # dweight[rows[s], d] += dout[order[j], d] for j in segment s, in order.
    t = cuda.grid(1)
    D = dout.shape[1]
    if t < rows.shape[0] * D:
        s = t // D
        d = t - s * D
        acc = dweight[rows[s], d]
        for j in range(starts[s], starts[s + 1]):
            acc += dout[order[j], d]
        dweight[rows[s], d] = acc


def embedding_forward(out, weight, ids):
    """out (M, D) = weight[ids] for flat ids (M,)."""
    d_out, host = _launch.output(out)
    _launch.launch_1d(_embedding_forward, d_out.size, d_out, _launch.to_device(weight),
                      _launch.to_device(ids))
    _launch.copy_back(d_out, host)


def embedding_backward(dweight, dout, order, starts, rows):
    """dweight[rows[s]] += the rows order[starts[s]:starts[s+1]] of dout, for each segment s."""
    host = None if _launch.is_device_array(dweight) else dweight   # accumulates: copy it in
    d_dw = _launch.to_device(dweight)
    _launch.launch_1d(_embedding_backward, rows.shape[0] * d_dw.shape[1], d_dw,
                      _launch.to_device(dout), _launch.to_device(order),
                      _launch.to_device(starts), _launch.to_device(rows))
    _launch.copy_back(d_dw, host)
