"""Text layers and models: the Embedding gradient against a dense one-hot product, Kim-CNN padding
invariance, directional gradient checks (v^T J u) of the Kim CNN and the window tagger in float64,
the max-norm constraint and conlleval chunk scores on hand-made examples."""
import numpy as np
import pytest

from numconv import config
from numconv.nn.embedding import (Embedding, embedding_backward, embedding_backward_reference,
                                  embedding_forward)
from numconv.text.metrics import chunk_scores, chunks
from numconv.text.models import KimCNN, WindowTagger, caps_feature, max_norm_
from numconv.text.train import pad_batch


# ------------------------------------------------------------------------------------ embedding

def test_embedding_forward_is_a_lookup_and_backward_matches_one_hot_matmul():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((13, 7))
    ids = rng.integers(0, 13, (5, 9))
    ids[0, :4] = 3                            # many repeats of one word
    np.testing.assert_array_equal(embedding_forward(ids, w), w[ids])
    dout = rng.standard_normal((5, 9, 7))
    got = embedding_backward(dout, ids, 13)
    np.testing.assert_allclose(got, embedding_backward_reference(dout, ids, 13), rtol=1e-12,
                               atol=1e-12)
    assert not got[np.setdiff1d(np.arange(13), ids)].any()   # unseen words get no gradient


def test_embedding_backward_is_bit_identical_and_accumulates():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 50, (64, 40))
    dout = rng.standard_normal((64, 40, 16)).astype(np.float32)
    a, b = embedding_backward(dout, ids, 50), embedding_backward(dout, ids, 50)
    assert a.tobytes() == b.tobytes()
    acc = a.copy()
    embedding_backward(dout, ids, 50, dweight=acc)
    np.testing.assert_allclose(acc, 2 * a, rtol=1e-5, atol=1e-5)


def test_embedding_layer_frozen_padding_and_bad_ids():
    e = Embedding(10, 4, padding_idx=0)
    assert not e.weight[0].any()
    e.forward(np.array([[0, 1, 1, 0]]))
    e.backward(np.ones((1, 4, 4), np.float32))
    assert not e.grads["weight"][0].any() and (e.grads["weight"][1] == 2).all()
    f = Embedding(10, 4, frozen=True)
    assert not f.params and "weight" in f.buffers and "weight" in f.state_dict()
    with pytest.raises(ValueError, match="outside"):
        e.forward(np.array([[10]]))
    e.zero_grad()                       # distinct rows' gradients: added once, padding dropped
    e.backward_rows(np.array([0, 3, 7]), np.full((3, 4), 2.0, np.float32))
    e.backward_rows(np.array([3]), np.ones((1, 4), np.float32))
    g = e.grads["weight"]
    assert not g[0].any() and (g[3] == 3).all() and (g[7] == 2).all() and not g[[1, 2]].any()
    f.backward_rows(np.array([1]), np.ones((1, 4), np.float32))   # frozen: nothing to add to
    assert not f.grads


# ---------------------------------------------------------------------------------- Kim CNN

def _kim(variant="rand", dtype=np.float32, **kw):
    table = np.random.default_rng(5).standard_normal((30, 6)).astype(dtype)
    return KimCNN(30, 3, embed_dim=6, widths=(2, 3, 5), maps=4, variant=variant,
                  pretrained=None if variant == "rand" else table, dtype=dtype, seed=2, **kw)


def test_padding_never_changes_a_kim_cnn_output():
    m = _kim().eval()
    sents = [np.array([4, 7, 9]), np.array([5]), np.arange(2, 14)]
    ids, lengths = pad_batch(sents, m.pad)
    together = m.forward((ids, lengths))
    for i, s in enumerate(sents):
        alone = m.forward(pad_batch([s], m.pad))
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-5, atol=1e-6)
    # Words beyond the sentence's own trailing padding are never seen (and get no gradient).
    noisy = ids.copy()
    for i, s in enumerate(sents):
        noisy[i, 2 * m.pad + len(s):] = np.random.default_rng(i).integers(
            2, 30, ids.shape[1] - 2 * m.pad - len(s))
    np.testing.assert_array_equal(m.forward((noisy, lengths)), together)
    m.zero_grad()
    m.forward((noisy, lengths))
    m.backward(np.ones_like(together))
    seen = {int(w) for i, s in enumerate(sents) for w in noisy[i, :2 * m.pad + len(s)]}
    unseen = sorted(set(range(2, 30)) - seen)
    assert unseen and not m.embedding.grads["weight"][unseen].any()


def _directional_check(model, batch, rng, eps=1e-6):
    """v^T J u by central differences vs the analytic <grad(v^T f), u>, u over every parameter."""
    model.zero_grad()
    y = model.forward(batch)
    v = rng.standard_normal(y.shape)
    model.backward(v)
    params = list(model.named_parameters())
    us = [rng.standard_normal(p.shape) for _, p, _ in params]
    for (name, _, _), u in zip(params, us):
        if name == "embedding.weight" and getattr(model.embedding, "padding_idx", None) == 0:
            u[0] = 0     # the padding row is held fixed: not a direction the model can move in
    analytic = sum(float((g * u).sum()) for (_, _, g), u in zip(params, us))

    def f(sign):
        for (_, p, _), u in zip(params, us):
            p += sign * eps * u
        out = float((model.forward(batch) * v).sum())
        for (_, p, _), u in zip(params, us):
            p -= sign * eps * u
        return out
    numeric = (f(1) - f(-1)) / (2 * eps)
    assert numeric == pytest.approx(analytic, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("variant", ["rand", "static", "non-static", "multichannel"])
def test_kim_cnn_gradcheck_float64(variant):
    rng = np.random.default_rng(3)
    m = _kim(variant, np.float64)
    for _, mod in m.modules():
        if hasattr(mod, "step"):
            mod.step = 7     # training mode: a fixed dropout mask, the same on every call
    batch = pad_batch([rng.integers(1, 30, n) for n in (1, 4, 9)], m.pad)
    _directional_check(m, batch, rng)
    if variant == "static":
        assert "embedding.weight" not in dict((n, p) for n, p, _ in m.named_parameters())


@pytest.mark.parametrize("activation,caps", [("hardtanh", 5), ("relu", 0)])
@pytest.mark.parametrize("products", ["windows", "distinct"])
def test_window_tagger_gradcheck_float64(activation, caps, products, monkeypatch):
    monkeypatch.setattr(config, "CPU_WINDOW_PRODUCTS", products)
    rng = np.random.default_rng(4)
    m = WindowTagger(20, 4, embed_dim=5, window=3, hidden=7, caps_dim=caps,
                     activation=activation, dtype=np.float64, seed=1)
    sents = [rng.integers(0, 20, n) for n in (2, 5)]
    ids, lengths = pad_batch(sents, m.pad)
    caps_ids, _ = pad_batch([rng.integers(1, 6, len(s)) for s in sents], m.pad)
    _directional_check(m, (ids, caps_ids, lengths), rng)


def test_window_tagger_is_per_token_and_ignores_batch_padding():
    m = WindowTagger(20, 4, embed_dim=5, window=5, hidden=7)
    s = np.array([3, 4, 5])
    ids, lengths = pad_batch([s], m.pad)
    caps, _ = pad_batch([np.ones(3, np.int64)], m.pad)
    alone = m.forward((ids, caps, lengths))
    assert alone.shape == (1, 4, 3)
    ids2, lengths2 = pad_batch([s, np.arange(1, 9)], m.pad)
    caps2, _ = pad_batch([np.ones(3, np.int64), np.ones(8, np.int64)], m.pad)
    np.testing.assert_allclose(m.forward((ids2, caps2, lengths2))[0, :, :3], alone[0], rtol=1e-5,
                               atol=1e-6)
    assert [caps_feature(w) for w in ("dog", "Dog", "IBM", "iPod", "1999")] == [1, 2, 3, 4, 5]


def test_max_norm_rescales_only_long_rows():
    m = _kim()
    w = m.fc.params["weight"]
    w[...] = 0
    w[0, 0], w[1, :2] = 10.0, (1.0, 1.0)
    max_norm_(m.fc, 3.0)
    assert np.linalg.norm(w[0]) == pytest.approx(3.0)
    np.testing.assert_allclose(w[1, :2], [1, 1])


# ------------------------------------------------------------------------------------- conlleval

def test_chunks_iob2_iob1_and_ill_formed():
    assert chunks(["B-NP", "I-NP", "O", "B-VP", "B-NP", "I-NP"]) == [
        ("NP", 0, 1), ("VP", 3, 3), ("NP", 4, 5)]
    assert chunks(["I-NP", "I-NP", "B-NP", "I-PP"]) == [("NP", 0, 1), ("NP", 2, 2), ("PP", 3, 3)]
    assert chunks(["O", "I-NP", "I-VP", "O"]) == [("NP", 1, 1), ("VP", 2, 2)]
    assert chunks(["B-PER", "E-PER", "S-LOC"]) == [("PER", 0, 1), ("LOC", 2, 2)]


def test_chunk_scores_hand_made():
    gold = [["B-NP", "I-NP", "O", "B-VP"], ["B-PP", "B-NP", "I-NP"]]
    pred = [["B-NP", "I-NP", "O", "B-NP"], ["B-PP", "B-NP", "O"]]
    s = chunk_scores(gold, pred)
    # gold chunks 4, predicted 4, correct 2 (NP 0-1 and PP 0-0): P = R = F1 = 50
    assert (s["gold_chunks"], s["predicted_chunks"], s["correct_chunks"]) == (4, 4, 2)
    assert s["precision"] == pytest.approx(50) and s["f1"] == pytest.approx(50)
    assert s["accuracy"] == pytest.approx(5 / 7)
    assert s["per_type"]["VP"]["recall"] == 0 and s["per_type"]["PP"]["f1"] == 100
    # IOB1 gold and IOB2 prediction of the same chunks score perfectly
    assert chunk_scores([["I-NP", "I-NP", "B-NP"]], [["B-NP", "I-NP", "B-NP"]])["f1"] == 100
    # a chunk whose boundary is off by one is wrong (exact match only)
    s = chunk_scores([["B-NP", "I-NP", "I-NP"]], [["B-NP", "I-NP", "O"]])
    assert (s["precision"], s["recall"]) == (0.0, 0.0)
