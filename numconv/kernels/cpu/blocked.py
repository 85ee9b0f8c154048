"""The register-blocked convolution: output channels in the vector lanes.

The direct kernels of numconv.kernels.cpu.conv vectorise along a run of output positions: each
tap reads a shifted, unaligned run of the input and adds it to a run of accumulators in memory,
so every multiply-add costs a load of the input, and the accumulators a load and a store every
few taps; that holds LeNet-5's C3 near 40 % of the core's peak. Here the vector runs along LANES
output channels instead. A block of PIXELS consecutive output pixels, counted along the rows
(so a block may run on from one row into the next), keeps its LANES-wide sums in registers for
the whole sum over (c, m, k); each tap is one load of that tap's weights for the lanes, then,
per pixel, one input value broadcast across them and one fused multiply-add (the form of
oneDNN's direct kernels). The taps are one table of flat offsets into the input, indexed
unsigned, so the inner loop holds little besides the multiply-adds. A finished block is
transposed in registers and each lane's PIXELS sums, consecutive in its output plane, written
by one masked store (_store_transposed).

- Weights are laid out (G, OB, Cg*KH*KW, LANES): OB = ceil(Og / LANES) blocks of output channels,
  zero past Og, so each tap's lane weights are one contiguous load; the bias (G, OB, LANES).
- A task reads x in place where no read falls in the padding (LeNet-5's C3), otherwise a
  zero-padded copy of the input rows it needs, so the inner loop has no bounds tests. The
  task's last block, were it to run past its last pixel, is moved back to end there: it
  recomputes a few of its neighbour's pixels, in the same task, with the same sums, so nothing
  differs and nothing outside the input is read. (Blocks of 5 x 2 pixels, as before, did that
  at every row's end and pair of rows: 13 % of AlexNet conv2's 27 x 27 work, 39 % of a 7 x 7's.)
- The output is written by address, so y must be C-contiguous (conv._blocked_forward sees to
  it).
- Each output is its bias plus the sum over (c, m, k) in that order, each multiply-add fused
  (fastmath 'contract', no reassociation): the same bits whatever the blocking or the thread
  count. Tasks own whole (image, group, rows) blocks: no shared writes.

The sums stay in registers only if LLVM vectorises the unrolled lane loop, the SLP vectoriser's
job, which Numba leaves off by default (numba.config.SLP_VECTORIZE). `slp_vectorized()` turns it
on while these kernels compile (around every call: a first call compiles); from the disk cache
they load already vectorised. Compiled without it the kernel is scalar and about 20x slower.
"""
import llvmlite.ir as llvm_ir
import numba
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.numpy_support import carray

# The kernels below are written out for these: a block of PIXELS pixels (the forward pass) or of
# COLS x ROWS taps (the weight gradient), 16 lanes each (10 of the 32 vector registers hold
# float32 sums, 20 hold float64 ones), one lane block's weights (or dy's lanes) per step.
LANES = 16
COLS = 5
ROWS = 2
PIXELS = COLS * ROWS
SUMS = PIXELS * LANES             # (a literal for _stack_buffer)


class _SlpVectorized:
    """Numba's SLP vectoriser on inside the block (for the kernels it compiles), as it was after
    (a plain class: a generator-based context manager cost more than the kernel call itself
    on a small layer)."""

    def __enter__(self):
        self.saved = numba.config.SLP_VECTORIZE
        numba.config.SLP_VECTORIZE = 1

    def __exit__(self, *exc):
        numba.config.SLP_VECTORIZE = self.saved
        return False


def slp_vectorized():
    """A context: Numba's SLP vectoriser on inside it, as it was after."""
    return _SlpVectorized()


@intrinsic
def _stack_buffer(typingctx, size, dtype):
    """A pointer to `size` (a literal) elements of `dtype` on the stack of the calling function:
    memory that LLVM knows nothing else can reach, so it may keep it in registers."""
    if not isinstance(size, types.IntegerLiteral) or not isinstance(dtype, types.DType):
        return None
    n, elem = size.literal_value, dtype.dtype

    def codegen(context, builder, signature, args):
        ty = context.get_value_type(elem)
        buf = cgutils.alloca_once(builder, llvm_ir.ArrayType(ty, n))
        return builder.bitcast(buf, ty.as_pointer())

    return types.CPointer(elem)(size, dtype), codegen


def _transpose_steps():
    """A 16 x 16 transpose in four steps: step b pairs row r (bit b clear) with row r | 2**b and
    swaps bit b of the row and column indices, each new row one two-source shuffle of the pair.
    Returns, per step, its pair distance and the two shuffle masks (the low row's, the high's)."""
    steps = []
    for b in range(4):
        k = 1 << b
        lo = [c if not c & k else LANES + (c ^ k) for c in range(LANES)]
        hi = [(c ^ k) if not c & k else LANES + c for c in range(LANES)]
        steps.append((k, lo, hi))
    return steps


@intrinsic
def _store_transposed(typingctx, accp, addr, stride, lanes):
    """Lane o < lanes of the block's sums (acc (PIXELS, LANES) at accp) to the PIXELS elements
    at byte address addr + o*stride: the block transposed in registers and each lane's run of
    pixels written by one masked store, where storing element by element took 160 extractions
    and stores a block (LeNet-5's C3, 150 taps a block, 1.13-1.33x; a test checks the bits
    against the reference). Seen by LLVM as element stores to consecutive pixels, they had also
    led its SLP vectoriser to vectorise the whole block across pixels, gathering the input."""
    if not isinstance(accp, types.CPointer) or accp.dtype not in (types.float32, types.float64):
        return None
    elem = accp.dtype

    def codegen(context, builder, signature, args):
        accp_, addr_, stride_, lanes_ = args
        ety = context.get_value_type(elem)
        size = context.get_abi_sizeof(ety)
        vty = llvm_ir.VectorType(ety, LANES)
        i1, i32, i64 = llvm_ir.IntType(1), llvm_ir.IntType(32), llvm_ir.IntType(64)
        base = builder.bitcast(accp_, vty.as_pointer())
        undef = llvm_ir.Constant(vty, llvm_ir.Undefined)
        # (the sums' buffer is aligned to its elements only: say so, or LLVM assumes 64 bytes)
        rows = [builder.load(builder.gep(base, [llvm_ir.Constant(i64, i)]),
                             align=size) if i < PIXELS
                else undef for i in range(LANES)]
        for k, lo, hi in _transpose_steps():
            mlo = llvm_ir.Constant(llvm_ir.VectorType(i32, LANES), lo)
            mhi = llvm_ir.Constant(llvm_ir.VectorType(i32, LANES), hi)
            new = list(rows)
            for r in range(LANES):
                if r & k:
                    continue
                new[r] = builder.shuffle_vector(rows[r], rows[r | k], mlo)
                new[r | k] = builder.shuffle_vector(rows[r], rows[r | k], mhi)
            rows = new
        vmask = llvm_ir.VectorType(i1, LANES)
        full = llvm_ir.Constant(vmask, [1] * PIXELS + [0] * (LANES - PIXELS))
        none = llvm_ir.Constant(vmask, [0] * LANES)
        ptr_t = vty.as_pointer()
        # the four-argument form (alignment an argument): LLVM up to 20 reads it as it is, later
        # versions upgrade it to the alignment as a parameter attribute
        fnty = llvm_ir.FunctionType(llvm_ir.VoidType(), [vty, ptr_t, i32, vmask])
        vec = f"v{LANES}" + ("f32" if elem == types.float32 else "f64")
        ptr = "p0" if str(ptr_t) == "ptr" else f"p0{vec}"     # opaque or typed pointers
        store = cgutils.get_or_insert_function(builder.module, fnty,
                                               f"llvm.masked.store.{vec}.{ptr}")
        align = llvm_ir.Constant(i32, size)
        for o in range(LANES):
            at = builder.add(addr_, builder.mul(stride_, llvm_ir.Constant(i64, o)))
            keep = builder.icmp_signed(">", lanes_, llvm_ir.Constant(i64, o))
            mask = builder.select(keep, full, none)
            builder.call(store, [rows[o], builder.inttoptr(at, ptr_t), align, mask])
        return context.get_dummy_value()

    return types.void(accp, types.intp, types.intp, types.intp), codegen


@njit(cache=True)
def _padded_block(x, n0, nimg, c0, nch, ih0, hin, pl, width):
    """xb[j, e, i, q] = x[n0 + j, c0 + e, ih0 + i, q - pl], zero outside x: the (nimg, nch, hin,
    width) block of the padded input that one task reads (its rows for a forward task, whole
    planes of a segment of images for a weight-gradient one)."""
    H, W = x.shape[2], x.shape[3]
    xb = np.zeros((nimg, nch, hin, width), dtype=x.dtype)
    j1 = min(W, width - pl)
    for j in range(nimg):
        for e in range(nch):
            for i in range(max(0, -ih0), min(hin, H - ih0)):
                xb[j, e, i, pl:pl + j1] = x[n0 + j, c0 + e, ih0 + i, :j1]
    return xb


@njit(cache=True, inline="always", fastmath={"contract"})
def _tap_fma(acc, i, xv, wg, r):
    """acc[i, :] += xv * wg[r, :], over the LANES output channels of pixel i of the block (r is
    unsigned: no wrap-around test)."""
    for o in range(LANES):
        acc[i, o] += xv * wg[r, o]


@njit(cache=True)
def _tap_offsets(xs, Cg, KH, KW, dh, dw):
    """off[r] = the flat offset in xs (N, C, H, W), C-contiguous, of tap r = (c*KH + m)*KW + k
    (the weights' order) from the block's first input: c*H*W + m*dh*W + k*dw, unsigned."""
    sR = xs.shape[3]
    sC = xs.shape[2] * sR
    off = np.empty(Cg * KH * KW, np.uint64)
    r = 0
    for c in range(Cg):
        for m in range(KH):
            for k in range(KW):
                off[r] = c * sC + m * dh * sR + k * dw
                r += 1
    return off


@njit(cache=True, inline="always")
def _offset(i, cols, rs, cs):
    """The flat offset of pixel i of a block cols wide from its first: its rows rs apart in the
    input, its columns cs."""
    return np.uint64((i // cols) * rs + (i % cols) * cs)


@njit(cache=True, inline="always")
def _pixel_offset(p, OW, oh0, rs, sw):
    """The flat offset in the input of output pixel p (counted along the rows of the task's
    output, oh0 its first row) from that of the task's first pixel."""
    oh = p // OW
    return (oh - oh0) * rs + (p - oh * OW) * sw


@njit(cache=True, fastmath={"contract"})
def _row_block(y, xs, ni, c0, ir0, n, g, oh0, oh1, wt, bt, KH, KW, sh, sw, dh, dw, Og):
    """Output rows [oh0, oh1) of image n, group g (all its lane blocks), reading input row
    ir0 + (oh - oh0)*sh + m*dh, channel c0 + c of xs[ni] (C-contiguous) for output row oh and
    kernel row m. A block is PIXELS consecutive pixels of those rows read in order, so it may
    run on from the end of one row to the start of the next: a 27-wide output is 2.7 blocks a
    row, not 6 blocks of 5 columns with 3 columns done twice."""
    OW = y.shape[3]
    OB = wt.shape[1]
    T = wt.shape[2]
    Cg = T // (KH * KW)
    # The sum runs over one table of tap offsets in the flat input, each tap's ten reads at
    # fixed distances from it (the block's, computed before its sum), all indices unsigned: no
    # negative-index wrap-around and no view per tap, so the loop is the ten fused
    # multiply-adds and little else (1.15-1.25x the speed of the views read at constant indices
    # it replaced). The ten calls are written out here and in _weight_block: folded into one
    # inline helper they stopped vectorising (C3's forward 0.21 -> 0.62 ms).
    xf = xs.reshape(-1)
    off = _tap_offsets(xs, Cg, KH, KW, dh, dw)
    sR = xs.shape[3]
    u = np.uint64
    rs = sh * sR                                  # from one output row to the next
    p0 = ((ni * xs.shape[1] + c0) * xs.shape[2] + ir0) * sR
    P0, P1 = oh0 * OW, oh1 * OW
    # a block within one row reads its pixels sw apart; one that runs on into the next row works
    # its offsets out (ten divisions, against the thousands of multiply-adds it does)
    t1, t2, t3, t4, t5 = u(sw), u(2 * sw), u(3 * sw), u(4 * sw), u(5 * sw)
    t6, t7, t8, t9 = u(6 * sw), u(7 * sw), u(8 * sw), u(9 * sw)
    accp = _stack_buffer(SUMS, y.dtype)
    acc = carray(accp, (PIXELS, LANES))
    # y, C-contiguous, by address: lane o of the block's pixels q0.. of plane (n, ch + o) are
    # PIXELS consecutive elements, a block within a row or not
    NO = y.shape[1]
    plane = y.shape[2] * OW
    isz = y.itemsize
    pstride = plane * isz
    yaddr = y.ctypes.data
    for ob in range(OB):
        lanes = min(LANES, Og - ob * LANES)
        wg = wt[g, ob]
        bg = bt[g, ob]
        for pb in range(P0, P1, PIXELS):
            q0 = min(pb, P1 - PIXELS)             # the last block ends at the last pixel
            straight = q0 % OW + PIXELS <= OW     # the block lies in one row
            d0 = _pixel_offset(q0, OW, oh0, rs, sw)
            if straight:
                s1, s2, s3, s4, s5, s6, s7, s8, s9 = t1, t2, t3, t4, t5, t6, t7, t8, t9
            else:
                s1 = u(_pixel_offset(q0 + 1, OW, oh0, rs, sw) - d0)
                s2 = u(_pixel_offset(q0 + 2, OW, oh0, rs, sw) - d0)
                s3 = u(_pixel_offset(q0 + 3, OW, oh0, rs, sw) - d0)
                s4 = u(_pixel_offset(q0 + 4, OW, oh0, rs, sw) - d0)
                s5 = u(_pixel_offset(q0 + 5, OW, oh0, rs, sw) - d0)
                s6 = u(_pixel_offset(q0 + 6, OW, oh0, rs, sw) - d0)
                s7 = u(_pixel_offset(q0 + 7, OW, oh0, rs, sw) - d0)
                s8 = u(_pixel_offset(q0 + 8, OW, oh0, rs, sw) - d0)
                s9 = u(_pixel_offset(q0 + 9, OW, oh0, rs, sw) - d0)
            for i in range(PIXELS):
                for o in range(LANES):
                    acc[i, o] = bg[o]
            p = u(p0 + d0)
            for r in range(T):
                q = p + off[r]
                ru = u(r)
                _tap_fma(acc, 0, xf[q], wg, ru)
                _tap_fma(acc, 1, xf[q + s1], wg, ru)
                _tap_fma(acc, 2, xf[q + s2], wg, ru)
                _tap_fma(acc, 3, xf[q + s3], wg, ru)
                _tap_fma(acc, 4, xf[q + s4], wg, ru)
                _tap_fma(acc, 5, xf[q + s5], wg, ru)
                _tap_fma(acc, 6, xf[q + s6], wg, ru)
                _tap_fma(acc, 7, xf[q + s7], wg, ru)
                _tap_fma(acc, 8, xf[q + s8], wg, ru)
                _tap_fma(acc, 9, xf[q + s9], wg, ru)
            ch = g * Og + ob * LANES
            _store_transposed(accp, yaddr + ((n * NO + ch) * plane + q0) * isz, pstride, lanes)


@njit(parallel=True, cache=True)
def blocked_forward(y, x, wt, bt, KH, KW, sh, sw, pt, pl, dh, dw, Og, nblk):
    """y (N, O, OH, OW), C-contiguous, from x (N, C, H, W), C-contiguous, wt (G, OB, Cg*KH*KW,
    LANES) and the bias bt (G, OB, LANES) (zeros for none). Task t owns image n, group g and the
    output rows of block t % nblk of nblk balanced ones, each holding at least PIXELS pixels
    (nblk <= OH // ceil(PIXELS / OW)). Where the task's reads lie inside x (no padding) it reads
    x in place, else a padded copy of its rows."""
    N, O, OH, OW = y.shape
    G = wt.shape[0]
    H, W = x.shape[2], x.shape[3]
    Cg = x.shape[1] // G
    width = (OW - 1) * sw + (KW - 1) * dw + 1
    inside = pt == 0 and pl == 0 and width <= W and (OH - 1) * sh + (KH - 1) * dh < H
    for t in prange(N * G * nblk):
        n = t // (G * nblk)
        g = (t // nblk) % G
        oh0 = (t % nblk) * OH // nblk
        oh1 = (t % nblk + 1) * OH // nblk
        if inside:
            _row_block(y, x, n, g * Cg, oh0 * sh, n, g, oh0, oh1, wt, bt, KH, KW, sh, sw, dh,
                       dw, Og)
        else:
            xb = _padded_block(x, n, 1, g * Cg, Cg, oh0 * sh - pt,
                               (oh1 - 1 - oh0) * sh + (KH - 1) * dh + 1, pl, width)
            _row_block(y, xb, 0, 0, 0, n, g, oh0, oh1, wt, bt, KH, KW, sh, sw, dh, dw, Og)


def lane_weights(w, b, groups, rotated=False):
    """w (O, Cg, KH, KW) and b (O,) or None as blocked_forward reads them: (G, OB, Cg*KH*KW,
    LANES) and (G, OB, LANES), zero past Og. With rotated=True, the weights of the input
    gradient's full correlation instead: w rotated by 180 degrees, its channel axes swapped
    within each group ((Cg*G, Og, KH, KW); b must be None)."""
    O, Cg, KH, KW = w.shape
    Og = O // groups
    outs, ins = (Cg, Og) if rotated else (Og, Cg)          # of the correlation computed
    OB = -(-outs // LANES)
    wt = np.empty((groups, OB, ins * KH * KW, LANES), dtype=w.dtype)
    bt = np.empty((groups, OB, LANES), dtype=w.dtype)
    w = np.ascontiguousarray(w)
    _fill_lanes(wt, bt, w, w[0, 0, 0] if b is None else b, b is not None, groups, rotated)
    return wt, bt


@njit(cache=True)
def _fill_lanes(wt, bt, w, b, has_bias, groups, rotated):
    """wt[g, ob, (c*KH + m)*KW + k, lane] = w[g*Og + ob*LANES + lane, c, m, k], or with rotated
    w[g*Og + c, ob*LANES + lane, KH-1-m, KW-1-k]; bt[g, ob, lane] = b[g*Og + ob*LANES + lane]
    (or 0); zero past the last output channel. The rotated form in one pass, without numpy's
    copy of the rotated weights (AlexNet's conv2: 0.55 ms against 0.61); one call, so that a
    small layer's costs a few microseconds."""
    O, Cg, KH, KW = w.shape
    Og = O // groups
    G, OB, T, _ = wt.shape
    outs = Cg if rotated else Og
    for t in range(G * OB):
        g, ob = t // OB, t % OB
        dst = wt[g, ob]
        for lane in range(LANES):
            o = ob * LANES + lane
            bt[g, ob, lane] = b[g * Og + o] if has_bias and o < outs else 0
        for lane in range(LANES):
            o = ob * LANES + lane
            if o >= outs:
                for r in range(T):
                    dst[r, lane] = 0
            elif rotated:
                for c in range(Og):
                    src = w[g * Og + c, o]
                    for m in range(KH):
                        for k in range(KW):
                            dst[(c * KH + m) * KW + k, lane] = src[KH - 1 - m, KW - 1 - k]
            else:
                src = w[g * Og + o]
                for c in range(Cg):
                    for m in range(KH):
                        for k in range(KW):
                            dst[(c * KH + m) * KW + k, lane] = src[c, m, k]


# ------------------------------------------------------------------------------------------
# Weight gradient: the same blocking with the roles of pixels and taps exchanged
# ------------------------------------------------------------------------------------------
# dW[o, c, m, k] = sum over images n and output pixels (oh, ow) of dy[n, o, oh, ow] times
# x[n, c, oh*sh + m*dh - pt, ow*sw + k*dw - pl]. A block is now COLS x ROWS *taps* (k, m) of one
# input channel, or, for a kernel of odd height (where pairs of kernel rows would recompute one
# row of every channel), COLS taps of one kernel row of two channels (AlexNet's conv2 1.2x, the
# Kim CNN's width-5 conv1d 1.6x). Its sums are LANES output channels wide, in registers; each
# output pixel is one load of dy's lanes (dy laid channels last) and, per tap, one input value
# broadcast and one fused multiply-add. A task sums one segment of images for one channel (or
# pair) and one lane block into its own partial; the partials are added in segment order (no
# shared writes, fixed order).


@njit(cache=True, fastmath={"contract"})
def _weight_block(part, dyt, xs, ni0, cs, n0, nimg, s, ob, c, cstore, KH, KW, sh, sw, dh, dw,
                  OH, OW, pairs):
    """part[s, ob, c] (KH, KW, LANES) = the sums over images n0 .. n0 + nimg - 1 (planes
    xs[ni0 + j, cs], padded, xs C-contiguous) of dy's lanes dyt[ob, n] (OH*OW, LANES) times the
    input each tap reads. A block is COLS taps of a kernel row by ROWS kernel rows of channel c;
    with `pairs`, COLS taps of one kernel row of channels c and c + 1 (planes cs and cs + 1; the
    blocks of a kernel of odd height, all used), storing channels cstore and up."""
    # As in _row_block: flat, unsigned indices, each pixel's ten reads at fixed distances.
    xf = xs.reshape(-1)
    W = xs.shape[3]
    rs = xs.shape[2] * W if pairs else dh * W     # from the block's first row of taps to its second
    u = np.uint64
    t1, t2, t3 = _offset(1, COLS, rs, dw), _offset(2, COLS, rs, dw), _offset(3, COLS, rs, dw)
    t4, t5, t6 = _offset(4, COLS, rs, dw), _offset(5, COLS, rs, dw), _offset(6, COLS, rs, dw)
    t7, t8, t9 = _offset(7, COLS, rs, dw), _offset(8, COLS, rs, dw), _offset(9, COLS, rs, dw)
    step, one = u(sw), u(1)
    mstep = 1 if pairs else ROWS
    acc = carray(_stack_buffer(SUMS, dyt.dtype), (PIXELS, LANES))
    for mb in range(0, KH, mstep):
        m0 = min(mb, KH - mstep)                  # the last rows of taps end at the last
        for kb in range(0, KW, COLS):
            k0 = min(kb, KW - COLS)               # the last block of taps ends at the last
            for i in range(PIXELS):
                for o in range(LANES):
                    acc[i, o] = 0
            for j in range(nimg):
                g = dyt[ob, n0 + j]
                plane = ((ni0 + j) * xs.shape[1] + cs) * xs.shape[2]
                pix = u(0)
                for oh in range(OH):
                    q = u((plane + oh * sh + m0 * dh) * W + k0 * dw)
                    for ow in range(OW):
                        _tap_fma(acc, 0, xf[q], g, pix)
                        _tap_fma(acc, 1, xf[q + t1], g, pix)
                        _tap_fma(acc, 2, xf[q + t2], g, pix)
                        _tap_fma(acc, 3, xf[q + t3], g, pix)
                        _tap_fma(acc, 4, xf[q + t4], g, pix)
                        _tap_fma(acc, 5, xf[q + t5], g, pix)
                        _tap_fma(acc, 6, xf[q + t6], g, pix)
                        _tap_fma(acc, 7, xf[q + t7], g, pix)
                        _tap_fma(acc, 8, xf[q + t8], g, pix)
                        _tap_fma(acc, 9, xf[q + t9], g, pix)
                        q += step
                        pix += one
            if pairs:
                for i in range(PIXELS):
                    if c + i // COLS >= cstore:
                        for o in range(LANES):
                            part[s, ob, c + i // COLS, m0, k0 + i % COLS, o] = acc[i, o]
            else:
                for i in range(PIXELS):
                    for o in range(LANES):
                        part[s, ob, c, m0 + i // COLS, k0 + i % COLS, o] = acc[i, o]


@njit(parallel=True, cache=True)
def blocked_weight_partials(part, dyt, x, KH, KW, sh, sw, pt, pl, dh, dw, OH, OW):
    """part (S, OB, C, KH, KW, LANES): segment s's sums over its images (the batch cut into S
    balanced segments) for each lane block and input channel. dyt (OB, N, OH*OW, LANES) is dy
    channels last, zero past O; x (N, C, H, W), C-contiguous; one group; KW >= COLS, and
    KH >= ROWS or C >= 2. A kernel of odd height (with 2+ channels) runs in blocks of channel
    pairs, one task a pair (the last of an odd count moved back over its neighbour, storing only
    its own channel); else a task a channel."""
    S, OB, C = part.shape[0], part.shape[1], part.shape[2]
    N, H, W = x.shape[0], x.shape[2], x.shape[3]
    hin = (OH - 1) * sh + (KH - 1) * dh + 1
    width = (OW - 1) * sw + (KW - 1) * dw + 1
    inside = pt == 0 and pl == 0 and hin <= H and width <= W
    pairs = KH % ROWS != 0 and C >= 2
    CP = (C + 1) // 2 if pairs else C
    nch = 2 if pairs else 1
    for t in prange(S * OB * CP):
        s = t // (OB * CP)
        ob = (t // CP) % OB
        cp = t % CP
        c = min(2 * cp, C - 2) if pairs else cp
        cstore = 2 * cp if pairs else cp
        n0 = s * N // S
        nimg = (s + 1) * N // S - n0
        if inside:
            _weight_block(part, dyt, x, n0, c, n0, nimg, s, ob, c, cstore, KH, KW, sh, sw, dh, dw,
                          OH, OW, pairs)
        else:
            xb = _padded_block(x, n0, nimg, c, nch, -pt, hin, pl, width)
            _weight_block(part, dyt, xb, 0, 0, n0, nimg, s, ob, c, cstore, KH, KW, sh, sw, dh,
                          dw, OH, OW, pairs)


@njit(parallel=True, cache=True)
def sum_weight_partials(dwt, part):
    """dwt (O, C, KH, KW) = part summed over its segments, in order."""
    O, C, KH, KW = dwt.shape
    S = part.shape[0]
    for t in prange(O * C):
        o, c = t // C, t % C
        ob, lane = o // LANES, o % LANES
        for m in range(KH):
            for k in range(KW):
                acc = part[0, ob, c, m, k, lane]
                for s in range(1, S):
                    acc += part[s, ob, c, m, k, lane]
                dwt[o, c, m, k] = acc


@njit(parallel=True, cache=True)
def lane_rows(dyt, dy):
    """dyt[ob, n, p, o'] = dy[n, ob*LANES + o', p] (p = oh*OW + ow), zero past O."""
    N, O, OH, OW = dy.shape
    OB = dyt.shape[0]
    for t in prange(N * OB):
        n, ob = t // OB, t % OB
        dst = dyt[ob, n]
        lanes = min(LANES, O - ob * LANES)
        if lanes < LANES:
            dst[:, :] = 0
        for o in range(lanes):
            src = dy[n, ob * LANES + o]
            for oh in range(OH):
                for ow in range(OW):
                    dst[oh * OW + ow, o] = src[oh, ow]
