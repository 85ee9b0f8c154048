"""A bag-of-words baseline: multinomial logistic regression on binary unigram features.

It sees which words a sentence holds but not their order, so on the embedded negation dataset it
cannot tell "not good" from "good ... not" — the gap to the CNN is what word order is worth.
Full-batch Adam on a sparse design matrix with a little L2; deterministic.
"""
import numpy as np


def _features(token_lists, index):
    from scipy.sparse import csr_matrix
    rows, cols = [], []
    for i, toks in enumerate(token_lists):
        ids = sorted({index[t] for t in toks if t in index})
        rows += [i] * len(ids)
        cols += ids
    data = np.ones(len(rows), np.float64)
    return csr_matrix((data, (rows, cols)), shape=(len(token_lists), len(index)))


def bag_of_words_accuracy(train_tokens, train_y, test_tokens, test_y, num_classes, steps=300,
                          lr=0.1, l2=1e-4):
    """Train on (tokens, class indices), return test accuracy."""
    index = {}
    for toks in train_tokens:
        for t in toks:
            index.setdefault(t, len(index))
    X, Xt = _features(train_tokens, index), _features(test_tokens, index)
    y = np.asarray(train_y)
    N, V = X.shape
    W, b = np.zeros((V, num_classes)), np.zeros(num_classes)
    Y = np.zeros((N, num_classes))
    Y[np.arange(N), y] = 1
    m = [np.zeros_like(W), np.zeros_like(b)]
    v = [np.zeros_like(W), np.zeros_like(b)]
    for t in range(1, steps + 1):
        z = X @ W + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        d = (p - Y) / N
        grads = [X.T @ d + l2 * W, d.sum(axis=0)]
        for k, (param, g) in enumerate(zip((W, b), grads)):
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            param -= lr * (m[k] / (1 - 0.9 ** t)) / (np.sqrt(v[k] / (1 - 0.999 ** t)) + 1e-8)
    pred = np.argmax(Xt @ W + b, axis=1)
    return float(np.mean(pred == np.asarray(test_y)))
