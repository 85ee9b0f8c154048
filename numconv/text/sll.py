"""Sentence-level log-likelihood (Collobert et al. 2011, section 3.4.2): training a tagger on whole
tag paths instead of single tokens.

The network gives each token t a score f[t, k] for every tag k; a learned matrix A adds a score
A[i, j] for tag j following tag i, and A[K, j] for a sentence starting with j. A path y scores

    s(y) = A[K, y_0] + f[0, y_0] + sum over t >= 1 of (A[y_{t-1}, y_t] + f[t, y_t])

and the loss of a sentence is -log p(y) = logadd over all paths of s(path) - s(y), the log-sum
taken by the forward recursion over K tags instead of K^T paths:

    alpha[0, k] = A[K, k] + f[0, k],   alpha[t, k] = f[t, k] + logadd_j (alpha[t-1, j] + A[j, k]).

Its gradient is "expected counts minus observed counts": with beta from the mirror-image backward
recursion, the probability that token t has tag k is exp(alpha[t, k] + beta[t, k] - logZ), and that
tags (j, k) sit at (t-1, t) is exp(alpha[t-1, j] + A[j, k] + f[t, k] + beta[t, k] - logZ).
Decoding then takes the path of highest s(y) (`numconv.text.decode.viterbi_scores`).

The word-level alternative (per-token softmax, `--loss wll`) treats tokens independently; the
sentence-level one lets the transition scores rule out, say, I-NP straight after B-VP, and trains
the network knowing they do. Sums run in float64; sentences are independent, so they run in
parallel, and the transition gradient is summed over them in a fixed order.
"""
import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _logadd(a, n):
    """log(sum(exp(a[:n]))) without overflow."""
    m = a[0]
    for i in range(1, n):
        if a[i] > m:
            m = a[i]
    if m == -np.inf:
        return m
    s = 0.0
    for i in range(n):
        s += np.exp(a[i] - m)
    return m + np.log(s)


@njit(parallel=True, cache=True)
def _sentence_nll(f, A, tags, lengths, df, dA_parts, nll):
    """f (N, T, K) float64 scores; A (K + 1, K); tags (N, T); lengths (N,). Writes nll[n],
    df[n, :L] (d nll / d f; rows past the sentence zero) and dA_parts[n] (d nll / d A)."""
    N, T, K = f.shape
    for n in prange(N):
        L = lengths[n]
        df[n, :, :] = 0.0
        dA_parts[n, :, :] = 0.0
        nll[n] = 0.0
        if L == 0:
            continue
        alpha = np.empty((L, K))
        beta = np.empty((L, K))
        tmp = np.empty(K)
        for k in range(K):
            alpha[0, k] = A[K, k] + f[n, 0, k]
        for t in range(1, L):
            for k in range(K):
                for j in range(K):
                    tmp[j] = alpha[t - 1, j] + A[j, k]
                alpha[t, k] = f[n, t, k] + _logadd(tmp, K)
        log_z = _logadd(alpha[L - 1], K)
        for k in range(K):
            beta[L - 1, k] = 0.0
        for t in range(L - 2, -1, -1):
            for j in range(K):
                for k in range(K):
                    tmp[k] = A[j, k] + f[n, t + 1, k] + beta[t + 1, k]
                beta[t, j] = _logadd(tmp, K)
        # expected counts
        for t in range(L):
            for k in range(K):
                df[n, t, k] = np.exp(alpha[t, k] + beta[t, k] - log_z)
        for k in range(K):
            dA_parts[n, K, k] = df[n, 0, k]
        for t in range(1, L):
            for j in range(K):
                for k in range(K):
                    dA_parts[n, j, k] += np.exp(alpha[t - 1, j] + A[j, k] + f[n, t, k]
                                                + beta[t, k] - log_z)
        # minus observed counts, and the gold path's score
        gold = A[K, tags[n, 0]] + f[n, 0, tags[n, 0]]
        df[n, 0, tags[n, 0]] -= 1.0
        dA_parts[n, K, tags[n, 0]] -= 1.0
        for t in range(1, L):
            i, j = tags[n, t - 1], tags[n, t]
            gold += A[i, j] + f[n, t, j]
            df[n, t, j] -= 1.0
            dA_parts[n, i, j] -= 1.0
        nll[n] = log_z - gold


def sentence_loss(logits, transitions, tags, lengths):
    """Sentence-level negative log-likelihood, averaged over the real tokens of the batch.

    logits (N, K, T) the tagger's scores (host array); transitions (K + 1, K), row K the start
    scores; tags (N, T) int gold tags (entries past a sentence's length are ignored); lengths (N,).
    -> (loss, dlogits (N, K, T) in the logits' dtype, dtransitions (K + 1, K) in theirs)."""
    logits = np.asarray(logits)
    N, K, T = logits.shape
    transitions = np.asarray(transitions)
    if transitions.shape != (K + 1, K):
        raise ValueError(f"transitions must be (K + 1, K) = ({K + 1}, {K}) for {K} tags, got "
                         f"{transitions.shape}")
    lengths = np.asarray(lengths, np.int64)
    tags = np.asarray(tags, np.int64)
    if lengths.shape != (N,) or lengths.min(initial=0) < 0 or lengths.max(initial=0) > T:
        raise ValueError(f"lengths must be (N,) = ({N},) values in [0, {T}], got {lengths}")
    if tags.shape != (N, T):
        raise ValueError(f"tags must be (N, T) = ({N}, {T}), got {tags.shape}")
    real = np.arange(T)[None, :] < lengths[:, None]
    if real.any() and (tags[real].min() < 0 or tags[real].max() >= K):
        raise ValueError(f"tags must lie in [0, {K}) on real tokens, got values from "
                         f"{tags[real].min()} to {tags[real].max()}")
    f = np.ascontiguousarray(logits.transpose(0, 2, 1), np.float64)
    df = np.empty_like(f)
    parts = np.empty((N, K + 1, K))
    nll = np.empty(N)
    _sentence_nll(f, np.ascontiguousarray(transitions, np.float64), np.where(real, tags, 0),
                  lengths, df, parts, nll)
    count = max(1, int(lengths.sum()))
    dA = np.zeros((K + 1, K))
    for n in range(N):                       # a fixed order: the same bits for any thread count
        dA += parts[n]
    dlogits = (df / count).transpose(0, 2, 1).astype(logits.dtype)
    return float(nll.sum() / count), np.ascontiguousarray(dlogits), \
        (dA / count).astype(transitions.dtype)
