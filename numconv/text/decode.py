"""Decoding a tagger's per-token scores into one tag sequence.

A window tagger scores each token on its own, so the best tag of each token may form a sequence
that no annotation contains: I-NP straight after B-VP, say, which conlleval scores as a broken
chunk. Viterbi decoding picks instead the sequence with the highest total log-probability among
those whose every transition (and first tag) occurred in the training data. The per-token scores
are unchanged; only the choice among them is constrained (a hard-constraint version of Collobert
et al. 2011's sentence-level inference, with no transition scores to learn).
"""
import numpy as np


def allowed_transitions(tag_sequences, num_tags):
    """(K + 1, K) bool: [i, j] is True when tag j followed tag i in some training sentence; row K
    (the sentence start) marks the tags that began one."""
    allowed = np.zeros((num_tags + 1, num_tags), bool)
    for seq in tag_sequences:
        prev = num_tags
        for t in seq:
            allowed[prev, t] = True
            prev = t
    return allowed


def log_softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _best_path(f, A):
    """The path (T,) maximising A[K, y0] + f[0, y0] + sum of A[y_{t-1}, y_t] + f[t, y_t] over
    scores f (T, K) and transition scores A (K + 1, K), and that maximum (-inf: none finite)."""
    T, K = f.shape
    best = A[K] + f[0]
    back = np.zeros((T, K), np.int64)
    for t in range(1, T):
        total = best[:, None] + A[:K]              # (previous tag, tag)
        back[t] = np.argmax(total, axis=0)
        best = total[back[t], np.arange(K)] + f[t]
    path = np.empty(T, np.int64)
    path[-1] = int(np.argmax(best))
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path, best.max()


def viterbi(logits, allowed):
    """logits (T, K) -> the best allowed tag path (T,) int64; the per-token argmax when no path is
    allowed (a sentence unlike any in training)."""
    if logits.shape[0] == 0:
        return np.zeros(0, np.int64)
    path, best = _best_path(log_softmax(np.asarray(logits, np.float64)),
                            np.where(allowed, 0.0, -np.inf))
    if not np.isfinite(best):
        return np.argmax(logits, axis=1).astype(np.int64)
    return path


def viterbi_scores(logits, transitions):
    """logits (T, K) raw token scores, transitions (K + 1, K) learned scores (row K: the start)
    -> the path (T,) int64 of highest total score A[K, y0] + f[0, y0] + sum of A[y_{t-1}, y_t] +
    f[t, y_t]: the decoding that matches sentence-level training (numconv.text.sll)."""
    if logits.shape[0] == 0:
        return np.zeros(0, np.int64)
    return _best_path(np.asarray(logits, np.float64), np.asarray(transitions, np.float64))[0]
