"""The window tagger's CPU layers on the real tokens' windows (numconv.kernels.cpu.windows)
against the dense path they replace (Conv1d over the padded batch, then the 1x1 output layer):
logits at the real tokens, every parameter gradient, the embeddings' gradients; the row-blocked
products against NumPy; thread counts; bad lengths."""
import numba
import numpy as np
import pytest

from kernel_helpers import assert_bitwise_equal, assert_close
from numconv import config
from numconv.kernels.cpu import windows as K
from numconv.text.models import WindowTagger
from numconv.text.train import pad_batch


def _tagger(dtype=np.float32, dropout=0.0, activation="hardtanh", frozen=False):
    return WindowTagger(25, 4, embed_dim=6, window=3, hidden=7, caps_dim=2, dtype=dtype, seed=2,
                        features=[("pos", 5)], feature_dim=3, dropout=dropout,
                        activation=activation, freeze_words=frozen)


def _batch(m, rng, lengths=(2, 5, 1, 4)):
    sents = [rng.integers(0, 25, n) for n in lengths]
    ids, lens = pad_batch(sents, m.pad)
    caps, _ = pad_batch([rng.integers(1, 6, n) for n in lengths], m.pad)
    pos, _ = pad_batch([rng.integers(1, 5, n) for n in lengths], m.pad)
    return ids, caps, lens, [pos]


def _dense(m, batch, dlogits):
    """The tagger's layers as Conv1d over the padded batch: logits and every gradient."""
    ids, caps, lengths, feats = batch
    parts = [m.embedding.forward(ids), m.caps.forward(caps), m.feature_pos.forward(feats[0])]
    x = np.ascontiguousarray(np.concatenate(parts, axis=2).transpose(0, 2, 1))
    h = m.act.forward(m.conv.forward(x))
    if m.hidden_dropout:
        h = m.dropout.forward(h)
    logits = m.out.forward(h)
    dh = m.out.backward(dlogits)
    if m.hidden_dropout:
        dh = m.dropout.backward(dh)
    dx = m.conv.backward(m.act.backward(dh))
    start = 0
    for layer in m._inputs():
        layer.backward(np.ascontiguousarray(dx[:, start:start + layer.embedding_dim]
                                            .transpose(0, 2, 1)))
        start += layer.embedding_dim
    return logits


@pytest.fixture(params=["windows", "distinct"])
def products(request, monkeypatch):
    """Each test below runs the first layer's products per window and per distinct id."""
    monkeypatch.setattr(config, "CPU_WINDOW_PRODUCTS", request.param)
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dropout,activation", [(0.0, "hardtanh"), (0.5, "relu")])
@pytest.mark.parametrize("frozen", [False, True])
def test_real_token_windows_equal_the_padded_convolution(dtype, dropout, activation, frozen,
                                                         products):
    rng = np.random.default_rng(0)
    m = _tagger(dtype, dropout, activation, frozen)
    if dropout:
        m.dropout.step = 3
    batch = _batch(m, rng)
    lengths = batch[2]
    T = batch[0].shape[1] - 2 * m.pad
    real = np.arange(T)[None, :] < lengths[:, None]
    dlogits = (rng.standard_normal((len(lengths), 4, T)) * real[:, None, :]).astype(dtype)

    m.zero_grad()
    got = m.forward(batch)
    m.backward(dlogits)
    packed = {n: g.copy() for n, _, g in m.named_parameters()}
    m.zero_grad()
    want = _dense(m, batch, dlogits)
    dense = {n: g.copy() for n, _, g in m.named_parameters()}

    assert got.shape == want.shape and got.dtype == want.dtype
    assert_close(got.transpose(0, 2, 1)[real], want.transpose(0, 2, 1)[real], dtype)
    assert not got.transpose(0, 2, 1)[~real].any()            # padding positions: 0
    assert packed.keys() == dense.keys()
    for name in packed:
        assert_close(packed[name], dense[name], dtype, err_msg=name)


def test_products_against_numpy_and_thread_counts(monkeypatch):
    rng = np.random.default_rng(1)
    monkeypatch.setattr(config, "CPU_WINDOW_MIN_ROWS", 16)
    monkeypatch.setattr(config, "CPU_WINDOW_SEGMENT_ROWS", 16)
    for M in (5, 100):                              # one block, several (uneven)
        a = rng.standard_normal((M, 9)).astype(np.float64)
        b = rng.standard_normal((7, 9)).astype(np.float64)
        c = rng.standard_normal((M, 7)).astype(np.float64)
        out = {}
        saved = numba.get_num_threads()
        try:
            for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
                numba.set_num_threads(n)
                nt, nn, tn = np.empty((M, 7)), np.empty((M, 9)), np.empty((7, 9))
                K.matmul_nt(nt, a, b)
                K.matmul_nn(nn, c, b)
                K.matmul_tn(tn, c, a)
                out[n] = (nt, nn, tn)
        finally:
            numba.set_num_threads(saved)
        for got, want in zip(out[1], (a @ b.T, c @ b, c.T @ a)):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        for x, y in zip(out[1], out[max(out)]):
            assert_bitwise_equal(x, y)


def test_windows_gather_and_scatter_are_adjoint():
    """<gather(x), g> = <x, scatter(g)>: the input gradient adds each window's gradient back to
    the rows it read, and no other row gets any."""
    rng = np.random.default_rng(2)
    lengths = np.array([3, 1, 4])
    k, C, Tp = 3, 2, 4 + 2
    starts = np.concatenate([[0], np.cumsum(lengths)])
    xt = rng.standard_normal((3, Tp, C))
    col = np.empty((int(starts[-1]), k * C))
    K.gather_windows(col, xt, starts, k)
    g = rng.standard_normal(col.shape)
    dxt = np.empty_like(xt)
    K.scatter_windows(dxt, g, starts, k)
    assert float((col * g).sum()) == pytest.approx(float((xt * dxt).sum()), rel=1e-12)
    np.testing.assert_array_equal(col[starts[1]], xt[1, :k].ravel())
    assert not dxt[1, 1 + k - 1:].any()             # sentence 1 (one token) reads rows 0..k-1


def _rows(rng, lengths, k, V):
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = rng.integers(0, V, (len(lengths), max(lengths) + k - 1))
    return ids, starts, K.DistinctRows(ids, starts, k, V)


def test_distinct_rows_tap_sums_and_their_gradient_are_adjoint():
    """sum_tap_rows adds, for each token, tap k's block of P at the id its window reads at k;
    gather_tap_grads collects dz back per (id, tap): <sum(P), dz> = <P, gather(dz)>."""
    rng = np.random.default_rng(4)
    lengths, k, H, V = np.array([3, 1, 6, 2]), 3, 4, 5      # few ids: every id repeats
    ids, starts, d = _rows(rng, lengths, k, V)
    np.testing.assert_array_equal(d.uniq, np.unique(np.concatenate(
        [ids[n, :L + k - 1] for n, L in enumerate(lengths)])))
    np.testing.assert_array_equal(d.uniq[d.inv], np.concatenate(
        [ids[n, :L + k - 1] for n, L in enumerate(lengths)]))
    for u in range(d.uniq.size):                    # each id's rows, increasing, all of them
        group = d.order[d.ustarts[u]:d.ustarts[u + 1]]
        assert (np.diff(group) > 0).all() and (d.inv[group] == u).all()
    assert d.ustarts[-1] == d.inv.size
    P = rng.standard_normal((d.uniq.size, k * H))
    z = np.zeros((int(starts[-1]), H))
    K.sum_tap_rows(z, P, d)
    want = np.zeros_like(z)                         # the definition, token by token
    for n, L in enumerate(lengths):
        for j in range(L):
            for t in range(k):
                u = np.searchsorted(d.uniq, ids[n, j + t])
                want[starts[n] + j] += P[u, t * H:(t + 1) * H]
    np.testing.assert_allclose(z, want, rtol=1e-13)
    dz = rng.standard_normal(z.shape)
    G = np.full_like(P, np.nan)                     # every entry must be written
    K.gather_tap_grads(G, dz, d)
    assert float((z * dz).sum()) == pytest.approx(float((P * G).sum()), rel=1e-12)


def test_products_by_id_are_the_same_bits_on_any_thread_count(monkeypatch):
    monkeypatch.setattr(config, "CPU_WINDOW_PRODUCTS", "distinct")
    monkeypatch.setattr(config, "CPU_WINDOW_MIN_ROWS", 4)      # several blocks and segments
    monkeypatch.setattr(config, "CPU_WINDOW_SEGMENT_ROWS", 4)
    m = _tagger(np.float32)
    batch = _batch(m, np.random.default_rng(6), lengths=(7, 3, 9, 5, 8))
    T = batch[0].shape[1] - 2 * m.pad
    dlogits = np.random.default_rng(7).standard_normal((5, 4, T)).astype(np.float32)
    out = {}
    saved = numba.get_num_threads()
    try:
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            m.zero_grad()
            logits = m.forward(batch)
            m.backward(dlogits)
            out[n] = [logits] + [g.copy() for _, _, g in m.named_parameters()]
    finally:
        numba.set_num_threads(saved)
    assert "tables" in m._cpu
    for a, b in zip(out[1], out[max(out)]):
        assert_bitwise_equal(a, b)


def test_auto_goes_by_id_where_words_repeat(monkeypatch):
    """'auto' takes the products by id where the distinct ids' share of the work (plus the
    gathers' overhead per table) is below the windows', and per window where ids barely repeat."""
    monkeypatch.setattr(config, "CPU_WINDOW_PRODUCTS", "auto")
    m = WindowTagger(1000, 4, embed_dim=40, window=3, hidden=7, caps_dim=2, seed=2)
    lengths = [30] * 8
    repeated = [np.arange(1, 31) for _ in lengths]                 # 30 distinct ids, 240 tokens
    fresh = [np.arange(1 + 30 * i, 31 + 30 * i) for i in range(8)]  # every token distinct
    for sents, want in ((repeated, "tables"), (fresh, "col")):
        ids, lens = pad_batch(sents, m.pad)
        caps, _ = pad_batch([np.ones(len(s), np.int64) for s in sents], m.pad)
        m.forward((ids, caps, lens))
        assert want in m._cpu


def test_products_by_id_check_ids_and_the_setting(monkeypatch):
    rng = np.random.default_rng(8)
    m = _tagger()
    ids, caps, lengths, feats = _batch(m, rng)
    monkeypatch.setattr(config, "CPU_WINDOW_PRODUCTS", "distinct")
    bad = ids.copy()
    bad[0, 1] = 25
    with pytest.raises(ValueError, match=r"outside \[0, 25\)"):
        m.forward((bad, caps, lengths, feats))
    monkeypatch.setattr(config, "CPU_WINDOW_PRODUCTS", "by-id")
    with pytest.raises(ValueError, match="CPU_WINDOW_PRODUCTS must be 'auto', 'windows' or "
                                         "'distinct', got 'by-id'"):
        m.forward((ids, caps, lengths, feats))


def test_bad_lengths_are_named():
    rng = np.random.default_rng(3)
    m = _tagger()
    ids, caps, lengths, feats = _batch(m, rng)
    with pytest.raises(ValueError, match="lengths must give each of the 4 sentences"):
        m.forward((ids, caps, np.array([2, 9, 1, 4]), feats))
