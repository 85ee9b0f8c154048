"""The arithmetic of one output element of `numconv.ops.nn`, written once for every device.

As in `numconv.kernels.elementwise`, each function computes one element (or one row) from whole
arrays and that element's indices, in a fixed order, with no device-specific code:
`compile_for(numba.njit)` gives CPU functions and `compile_for(numba.cuda.jit, device=True)` the
CUDA device functions of `numconv.kernels.cuda.nn`. Called directly they run as Python.

The CPU layers compute activations, batch norm, LRN and the loss as NumPy expressions (fast there);
these functions follow the same arithmetic, in the same dtype, so the two devices agree to float32
rounding. The dropout generator is shared outright: the CPU kernel in `numconv.ops.nn` calls
`dropout_key` / `dropout_keep` too, so masks are bit-identical on every device.

Sums that the CPU takes in float64 are taken in float64 here too, each term converted with
`float()` (a bare `0.0 + float32` stays float32 when run as Python under NumPy 2's promotion rules,
as the CUDA simulator does).

Layouts: elementwise ops on flat arrays (index i); batch norm on (N, C, S) views (S = the product
of the spatial sizes); LRN on (N, C, S); softmax cross-entropy on logits (N, K).
"""
import math

import numpy as np

from numconv.kernels._twins import compile_functions

__all__ = [
    # helpers first: `compile_for` compiles in this order, so callees exist before their callers
    "mix64", "dropout_key", "dropout_keep",
    "relu_element", "relu_grad_element", "tanh_element", "tanh_grad_element", "sigmoid_element",
    "sigmoid_grad_element", "hardtanh_element", "hardtanh_grad_element",
    "batchnorm_element", "batchnorm_grad_element",
    "lrn_denominator", "lrn_element", "lrn_grad_element",
    "cross_entropy_row", "argmax_row", "max_norm_scale",
]

GOLDEN = 0x9E3779B97F4A7C15   # 2^64 / golden ratio: spreads consecutive seeds over the key space


def compile_for(jit, **options):
    """Every function of `__all__` compiled with `jit(function, **options)`, as {name: compiled}
    (see `numconv.kernels._twins`)."""
    return compile_functions(globals(), __all__, jit, **options)


# ------------------------------------------------------------------------------------- dropout

def mix64(z):
    """SplitMix64's finaliser: a bijective scramble of 64 bits (z a uint64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dropout_key(seed, step):
    """The generator's key for one (seed, step): every mask element is drawn from it."""
    return mix64(np.uint64(seed) * np.uint64(GOLDEN) + np.uint64(step))


def dropout_keep(key, i, keep, scale):
    """Mask element i: `scale` if uniform(key, i) < keep else 0; uniform has 53 random bits."""
    u = (mix64(key ^ np.uint64(i)) >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    return scale if u < keep else 0.0


# --------------------------------------------------------------------------------- activations

def relu_element(x, i):
    v = x[i]
    return x.dtype.type(0) if v < 0 else v          # NaN passes through, as np.maximum's does


def relu_grad_element(dy, y, i):
    """dy where the unit was active (y > 0); the kink at 0 takes the zero side."""
    return dy[i] if y[i] > 0 else dy.dtype.type(0)


def tanh_element(x, i, scale, slope):
    """scale * tanh(slope * x) in x's dtype (LeCun's A tanh(S a) with A, S = 1.7159, 2/3)."""
    t = x.dtype.type
    return t(scale) * math.tanh(t(slope) * x[i])


def tanh_grad_element(dy, y, i, scale, slope):
    """dy * S (A - y^2 / A)."""
    t = dy.dtype.type
    return dy[i] * (t(slope) * (t(scale) - y[i] * y[i] / t(scale)))


def sigmoid_element(x, i):
    """0.5 (1 + tanh(x / 2)): equal to 1 / (1 + e^-x) and stable for any |x|."""
    t = x.dtype.type
    return t(0.5) * (t(1) + math.tanh(t(0.5) * x[i]))


def sigmoid_grad_element(dy, y, i):
    return dy[i] * y[i] * (y.dtype.type(1) - y[i])


def hardtanh_element(x, i):
    return min(max(x[i], x.dtype.type(-1)), x.dtype.type(1))


def hardtanh_grad_element(dy, x, i):
    return dy[i] if -1 < x[i] < 1 else dy.dtype.type(0)


# ---------------------------------------------------------------------------------- batch norm

def batchnorm_element(x, mean, inv, gamma, beta, n, c, s):
    """(x_hat, y) at x[n, c, s]: x_hat = (x - mean_c) inv_c, y = x_hat gamma_c + beta_c, with mean
    and inv already in x's dtype."""
    x_hat = (x[n, c, s] - mean[c]) * inv[c]
    return x_hat, x_hat * gamma[c] + beta[c]


def batchnorm_grad_element(dy, x_hat, gamma, inv, dgamma, dbeta, n, c, s, m, training):
    """dx at (n, c, s), with scale = gamma_c inv_c. In training the statistics depend on x:
    dx = scale (dy - (dbeta + x_hat dgamma) / m); in eval they are constants: dx = dy scale."""
    scale = gamma[c] * inv[c]
    if not training:
        return dy[n, c, s] * scale
    t = dy.dtype.type
    return scale * (dy[n, c, s] - (dbeta[c] + x_hat[n, c, s] * dgamma[c]) / t(m))


# --------------------------------------------------------------------------- local response norm

def lrn_denominator(x, n, c, p, size, alpha, k):
    """s = k + alpha * (sum of x[n, c', p]^2 for c' in [c - size//2, c + (size-1)//2]), squares in
    x's dtype, summed in float64 (as the CPU's cumulative sums are)."""
    C = x.shape[1]
    acc = 0.0
    for cc in range(max(c - size // 2, 0), min(c + (size - 1) // 2 + 1, C)):
        v = x[n, cc, p]
        acc += float(v * v)
    t = x.dtype.type
    return t(k) + t(alpha) * t(acc)


def lrn_element(x, s, n, c, p, beta):
    return x[n, c, p] * s[n, c, p] ** -x.dtype.type(beta)


def lrn_grad_element(dy, x, s, n, c, p, size, beta, two_alpha_beta):
    """dx_c = dy_c s_c^-beta - 2 alpha beta x_c sum_{j: c in window(j)} dy_j x_j s_j^(-beta-1);
    c lies in window(j) for j in [c - (size-1)//2, c + size//2] (the mirror of the window)."""
    C = x.shape[1]
    t = dy.dtype.type
    acc = 0.0
    for j in range(max(c - (size - 1) // 2, 0), min(c + size // 2 + 1, C)):
        acc += float(dy[n, j, p] * x[n, j, p] * s[n, j, p] ** (-t(beta) - t(1)))
    return (dy[n, c, p] * s[n, c, p] ** -t(beta)
            - t(two_alpha_beta) * x[n, c, p] * t(acc))


# ------------------------------------------------------------------------ softmax cross-entropy

def cross_entropy_row(dlogits, logits, labels, weights, has_weights, n, smoothing, total):
    """Row n of the mean softmax cross-entropy: writes dlogits[n] = (softmax - target) w_n / total
    and returns the row's weighted loss -w_n sum_k target_k log p_k, all in float64 from the
    log-sum-exp (no overflow for large logits). target = (1 - e) one_hot + e / K."""
    K = logits.shape[1]
    top = float(logits[n, 0])
    for k in range(1, K):
        top = max(top, float(logits[n, k]))
    z_sum = 0.0
    for k in range(K):
        z_sum += math.exp(float(logits[n, k]) - top)
    lse = math.log(z_sum)
    w = float(weights[n]) if has_weights else 1.0
    off = smoothing / K
    loss = 0.0
    for k in range(K):
        logp = float(logits[n, k]) - top - lse
        target = off + (1.0 - smoothing if k == labels[n] else 0.0)
        loss -= target * logp
        dlogits[n, k] = (math.exp(logp) - target) * (w / total)
    return w * loss


def max_norm_scale(w, r, max_norm):
    """The factor that brings row r of w back to L2 norm `max_norm` when it is longer (else 1),
    the norm summed in float64 (Kim 2014's constraint on the output layer's rows)."""
    acc = 0.0
    for k in range(w.shape[1]):
        v = float(w[r, k])
        acc += v * v
    return min(1.0, max_norm / max(math.sqrt(acc), 1e-12))


def argmax_row(a, n):
    """The first index of row n's maximum (np.argmax's tie rule)."""
    best = a[n, 0]
    arg = 0
    for k in range(1, a.shape[1]):
        if a[n, k] > best:
            best = a[n, k]
            arg = k
    return arg
