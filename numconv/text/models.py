"""The two text CNNs.

KimCNN (Kim 2014): ids (N, T) -> embedding (N, D, T) -> parallel Conv1d of widths (3, 4, 5) x 100
maps -> max over time -> ReLU -> concatenation -> dropout 0.5 -> Linear -> logits (N, K).
  Sentences are laid out as Kim's code does: `pad = max(widths) - 1` padding words before the
  sentence and at least as many after it (more when the batch's longest sentence is longer). A
  filter of width k then has len + k - 1 windows that touch the sentence ("wide" convolution); every
  other window lies wholly in padding and is set to -inf before the max, so padding never wins and
  gets no gradient, and a sentence's output does not depend on how long its batch is padded.
  Max then ReLU equals Kim's ReLU then max (ReLU is monotone) and is cheaper.
  Variants: 'rand' (table learned from U[-a, a]), 'static' (pretrained, frozen), 'non-static'
  (pretrained, fine-tuned) and 'multichannel' (a frozen and a fine-tuned copy; each filter is
  applied to both channels and the results added, i.e. one weight shared by the two channels).

WindowTagger (Collobert et al. 2011, window approach): ids (N, T) -> word vectors (+ a 5-d
capitalisation feature) -> Conv1d of width `window` over padding-token-extended sentences (so
'same' size: one output per word) -> hardtanh or ReLU hidden layer -> per-word Linear (a width-1
Conv1d) -> logits (N, K, T), trained with a softmax per word.

Both run on the GPU after `model.to("cuda")` (the ids, caps, feature ids and lengths stay host
arrays: they are the batch, and the embeddings sort the ids there); the CPU path is unchanged.
"""
import numpy as np

from numconv import config, ops
from numconv.nn import Conv1d, Dropout, HardTanh, Linear, ReLU
from numconv.nn import device as dev
from numconv.nn.embedding import Embedding, _check_ids
from numconv.nn.module import Module
from numconv.ops import _buffers as buffers
from numconv.ops import nn as F

VARIANTS = ("rand", "static", "non-static", "multichannel")
ACTIVATIONS = ("hardtanh", "relu")


class TiedChannelConv1d(Conv1d):
    """Conv1d over `copies` stacked copies of a C-channel input with one (O, C, K) weight shared
    by every copy: y = sum_c conv(x_c, w) + b (Kim's multichannel filters)."""

    def __init__(self, in_channels, out_channels, kernel_size, copies=2, **kw):
        super().__init__(in_channels, out_channels, kernel_size, **kw)
        self.copies = copies

    def _tiled(self):
        w = self.params["weight"]
        if dev.on_gpu(w):
            return dev.concat_channels([w] * self.copies)
        return np.ascontiguousarray(np.concatenate([w] * self.copies, axis=1))

    def forward(self, x):
        self._x = x
        if dev.on_gpu(x) or dev.on_gpu(self.params["weight"]):
            dev.same_place(x=x, weight=self.params["weight"])
            return dev.conv_forward(1, x, self._tiled(), self.params.get("bias"))
        return ops.conv1d(x, self._tiled(), self.params.get("bias"), device=self.device)

    def backward(self, dy):
        x, k = self._x, self.kernel_size[0]
        if dev.on_gpu(dy):
            w = self._tiled()
            dw = dev.conv_backward_weight(1, dy, x, w.shape)
            C = self.params["weight"].shape[1]
            total = dev.split_channels(dw, 0, C)         # the copies' gradients, added in order
            for c in range(1, self.copies):
                total = F.add(total, dev.split_channels(dw, c * C, C))
            F.accumulate(self.grads["weight"], total)
            if "bias" in self.params:
                F.accumulate(self.grads["bias"], dev.conv_backward_bias(1, dy))
            if not self.needs_input_grad:
                return None
            return dev.conv_backward_input(1, dy, w, x.shape)
        dw = ops.conv1d_backward_weight(dy, x, k, device=self.device)
        O, C = self.params["weight"].shape[:2]
        self.grads["weight"] += dw.reshape(O, self.copies, C, k).sum(axis=1)
        if "bias" in self.params:
            self.grads["bias"] += ops.conv1d_backward_bias(dy, device=self.device)
        if not self.needs_input_grad:
            return None
        return ops.conv1d_backward_input(dy, self._tiled(), x.shape, device=self.device)


def kim_layout(widths):
    """Padding words before each sentence (and at least after it)."""
    return max(widths) - 1


def window_mask(lengths, pad, width, n_out):
    """(N, n_out) bool: window t of a width-`width` filter touches the sentence."""
    t = np.arange(n_out)[None, :]
    lengths = np.asarray(lengths)[:, None]
    return (t >= pad - width + 1) & (t <= pad + lengths - 1)


class KimCNN(Module):
    def __init__(self, vocab_size, num_classes, embed_dim=300, widths=(3, 4, 5), maps=100,
                 dropout=0.5, variant="rand", pretrained=None, init_scale=0.25, seed=0,
                 dtype=np.float32):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r} is unknown; use one of {', '.join(VARIANTS)}")
        if variant != "rand" and pretrained is None:
            raise ValueError(f"variant {variant!r} needs pretrained vectors: pass --vectors "
                             f"(a file or glove-6b-50d), or use --variant rand")
        rng = np.random.default_rng([seed, 1])
        if pretrained is not None:
            embed_dim = pretrained.shape[1]
        self.variant, self.widths, self.maps = variant, tuple(widths), maps
        self.pad = kim_layout(widths)
        table = None if variant == "rand" else pretrained
        self.add("embedding", Embedding(vocab_size, embed_dim, weight=table,
                                        frozen=variant == "static", padding_idx=0,
                                        init_scale=init_scale, rng=rng, dtype=dtype))
        copies = 1
        if variant == "multichannel":
            self.add("embedding_static", Embedding(vocab_size, embed_dim, weight=pretrained,
                                                   frozen=True, padding_idx=0, dtype=dtype))
            copies = 2
        for i, k in enumerate(self.widths):
            conv = (TiedChannelConv1d(embed_dim, maps, k, copies=2, init="glorot", rng=rng,
                                      dtype=dtype) if copies == 2 else
                    Conv1d(embed_dim, maps, k, init="glorot", rng=rng, dtype=dtype))
            conv.needs_input_grad = variant != "static"
            self.add(f"conv{i}", conv)
        self.add("dropout", Dropout(dropout, seed=seed))
        self.add("fc", Linear(maps * len(self.widths), num_classes, init="glorot", rng=rng,
                              dtype=dtype))

    def convs(self):
        return [self.children[f"conv{i}"] for i in range(len(self.widths))]

    def forward(self, batch):
        """batch = (ids (N, T) laid out with `self.pad` leading padding words, lengths (N,))."""
        ids, lengths = batch
        if ids.shape[1] < 2 * self.pad + 1:
            raise ValueError(f"a Kim-CNN batch needs at least {2 * self.pad + 1} positions "
                             f"(use numconv.text.train.pad_batch), got {ids.shape[1]}")
        if dev.on_gpu(self.embedding.weight):
            return self._forward_gpu(ids, lengths)
        # each channel's (N, T, D) vectors are kept for the backward at the max-pool winners;
        # the convolutions read their concatenation, seen as (N, C, T)
        self._parts = [self.embedding.forward(ids)]
        if self.variant == "multichannel":
            self._parts.append(self.embedding_static.forward(ids))
        x = np.ascontiguousarray(np.concatenate(self._parts, axis=2)).transpose(0, 2, 1)
        pooled, self._pool = [], []
        for conv, k in zip(self.convs(), self.widths):
            y = conv.forward(x)
            valid = window_mask(lengths, self.pad, k, y.shape[2])
            y = np.where(valid[:, None, :], y, -np.inf).astype(y.dtype, copy=False)
            m, idx = ops.global_pool(y, "max", return_indices=True)
            pooled.append(m)
            self._pool.append((y.shape, idx))
        self._h = F.relu_forward(np.concatenate(pooled, axis=1))
        return self.fc.forward(self.dropout.forward(self._h))

    def _forward_gpu(self, ids, lengths):
        """`forward` with the model on the GPU: the same steps on device arrays."""
        # each channel's (N, T, D) vectors are kept for the backward at the max-pool winners
        self._parts = [self.embedding.forward(ids)]
        if self.variant == "multichannel":
            self._parts.append(self.embedding_static.forward(ids))
        x = dev.concat_channels([dev.transpose(p) for p in self._parts]) \
            if len(self._parts) > 1 else dev.transpose(self._parts[0])
        lengths = dev.to_device(np.asarray(lengths, dtype=np.int64))
        pooled, self._pool = [], []
        for conv, k in zip(self.convs(), self.widths):
            y = conv.forward(x)
            # the windows that touch the sentence, window_mask's [pad - k + 1, pad + length)
            dev.fill_outside_(y, lengths, self.pad - k + 1, self.pad, -np.inf)
            m, idx = dev.global_pool(y, "max")
            pooled.append(m)
            self._pool.append((y.shape, idx))
        self._h = F.relu_forward(dev.concat_channels(pooled))
        return self.fc.forward(self.dropout.forward(self._h))

    def features(self, batch):
        """The penultimate layer (N, maps * len(widths)), for inspection."""
        self.forward(batch)
        return self._h

    def backward(self, dlogits):
        dh = F.relu_backward(self.dropout.backward(self.fc.backward(dlogits)), self._h)
        # A tied (multichannel) filter's output is the sum of the same filter over each channel,
        # so its weight gradient is the sum of one winners-only gradient per channel, and the
        # input gradient (which does not depend on x) is the same for both.
        gpu = dev.on_gpu(dh)
        dxt = None
        for i, (conv, (_, idx)) in enumerate(zip(self.convs(), self._pool)):
            dpool = dev.split_channels(dh, i * self.maps, self.maps) if gpu else \
                np.ascontiguousarray(dh[:, i * self.maps:(i + 1) * self.maps])
            dw = None
            for part in self._parts:
                dx, dw_part, db = _winners_backward(dpool, idx, part, conv)
                dw = dw_part if dw is None else F.add(dw, dw_part)
            F.accumulate(conv.grads["weight"], dw)
            if "bias" in conv.params:
                F.accumulate(conv.grads["bias"], db)
            if conv.needs_input_grad:
                dxt = dx if dxt is None else F.add(dxt, dx)
        if dxt is not None and not self.embedding.frozen:
            self.embedding.backward(dxt)
        return None


def _winners_backward(dm, idx, xt, conv):
    """(dxt (N, T, D), dw, db) of `conv` (its one (O, D, K) weight) followed by max over positions,
    from the winners idx alone, for channels-last xt on either device."""
    w = conv.params["weight"]
    if dev.on_gpu(xt):
        return dev.conv1d_max_backward(dm, idx, xt, w)
    dx, dw, db = ops.conv1d_max_backward(dm, idx, xt.transpose(0, 2, 1), w, device=conv.device)
    return dx.transpose(0, 2, 1), dw, db


CAPS = 6   # padding, lower, Initial, ALL CAPS, mIxed, no letters


def caps_feature(word):
    """Collobert's capitalisation feature: 1 lower, 2 Initial, 3 CAPS, 4 mixed, 5 no letters."""
    letters = [c for c in word if c.isalpha()]
    if not letters:
        return 5
    if all(c.islower() for c in letters):
        return 1
    if all(c.isupper() for c in letters):
        return 3
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return 2
    return 4


class WindowTagger(Module):
    """Collobert et al. (2011)'s window network: each token's word vector (plus a capitalisation
    vector and, optionally, vectors of further discrete input columns such as POS tags: their
    section 6 feeds POS to the chunker) in a window of `window` tokens -> hidden layer -> tag
    scores. `features`: ((name, number of values incl. padding/unknown), ...), each embedded in
    `feature_dim` dimensions as `feature_<name>`. `freeze_words`: keep the (pretrained) word
    vectors fixed, so that words met only at test time stay in the same space as the rest.
    `sll`: the tagger also holds the transition scores of sentence-level training."""

    def __init__(self, vocab_size, num_tags, embed_dim=50, window=5, hidden=300, caps_dim=5,
                 activation="hardtanh", pretrained=None, init_scale=0.25, seed=0,
                 dtype=np.float32, features=(), feature_dim=10, dropout=0.0,
                 freeze_words=False, sll=False):
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"--window must be an odd width >= 1 (3 or 5), got {window}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is unknown; use one of "
                             f"{', '.join(ACTIVATIONS)}")
        rng = np.random.default_rng([seed, 2])
        if pretrained is not None:
            embed_dim = pretrained.shape[1]
        self.window, self.pad, self.caps_dim = window, window // 2, caps_dim
        self.add("embedding", Embedding(vocab_size, embed_dim, weight=pretrained,
                                        frozen=freeze_words, init_scale=init_scale, rng=rng,
                                        dtype=dtype))
        if caps_dim:
            self.add("caps", Embedding(CAPS, caps_dim, init_scale=init_scale, rng=rng, dtype=dtype))
        self.features = tuple((str(name), int(size)) for name, size in features)
        for name, size in self.features:
            self.add(f"feature_{name}", Embedding(size, feature_dim, init_scale=init_scale,
                                                  rng=rng, dtype=dtype))
        inputs = embed_dim + caps_dim + feature_dim * len(self.features)
        conv = Conv1d(inputs, hidden, window, init="glorot", rng=rng, dtype=dtype)
        self.add("conv", conv)
        self.add("act", HardTanh() if activation == "hardtanh" else ReLU())
        self.hidden_dropout = dropout
        if dropout:   # not in Collobert et al.; on the hidden units, as in Kim's CNN
            self.add("dropout", Dropout(dropout, seed=seed))
        self.add("out", Conv1d(hidden, num_tags, 1, init="glorot", rng=rng, dtype=dtype))
        if sll:
            # Collobert et al.'s transition scores, trained by the sentence-level loss
            # (numconv.text.sll), which also writes their gradient: row num_tags starts a sentence.
            self.add_param("transitions", np.zeros((num_tags + 1, num_tags), dtype))

    def _inputs(self):
        """The embedding layers whose vectors are concatenated per token, in order."""
        layers = [self.embedding] + ([self.caps] if self.caps_dim else [])
        return layers + [getattr(self, f"feature_{name}") for name, _ in self.features]

    def forward(self, batch):
        """batch = (ids (N, T + 2 pad), caps (N, T + 2 pad), lengths[, [feature ids (N, T + 2
        pad)] one per feature]) -> logits (N, K, T)."""
        ids, caps = batch[0], batch[1]
        feats = batch[3] if len(batch) > 3 else []
        if len(feats) != len(self.features):
            raise ValueError(f"this tagger reads {len(self.features)} feature column(s) "
                             f"({', '.join(n for n, _ in self.features) or 'none'}), the batch "
                             f"has {len(feats)}")
        tables = self._inputs()
        inputs = list(zip(tables, [ids] + ([caps] if self.caps_dim else []) + list(feats)))
        if not dev.on_gpu(self.embedding.weight):
            return self._forward_cpu(inputs, batch[2])
        parts = [layer.forward(i) for layer, i in inputs]
        # concatenating on axis 2 then transposing = transposing each, then concatenating
        x = dev.concat_channels([dev.transpose(p) for p in parts]) if len(parts) > 1 else \
            dev.transpose(parts[0])
        h = self.act.forward(self.conv.forward(x))
        if self.hidden_dropout:
            h = self.dropout.forward(h)
        return self.out.forward(h)

    # On the CPU the two layers run on the real tokens' windows only (numconv.kernels.cpu.windows):
    # the same numbers as Conv1d over the padded batch at the real tokens, without the batch
    # padding's share of the work; logits at padding positions are 0. The first layer's products
    # run either per window (im2col of the real tokens) or per distinct id of each table, where
    # ids repeat enough to make that the smaller product (config.CPU_WINDOW_PRODUCTS).

    def _window_products(self, inputs, starts):
        """'windows', or the DistinctRows of each input table where the products go by id."""
        from numconv.kernels.cpu import windows as K
        mode = config.CPU_WINDOW_PRODUCTS
        if mode not in ("auto", "windows", "distinct"):
            raise ValueError(f"config.CPU_WINDOW_PRODUCTS must be 'auto', 'windows' or "
                             f"'distinct', got {mode!r}")
        if mode == "windows":
            return "windows"
        rows = [K.DistinctRows(_check_ids(ids, layer.num_embeddings), starts, self.window,
                               layer.num_embeddings) for layer, ids in inputs]
        Q = int(starts[-1])
        by_id = sum(d.uniq.size * layer.embedding_dim + Q * config.CPU_WINDOW_ID_OVERHEAD
                    for d, (layer, _) in zip(rows, inputs))
        if mode == "auto" and by_id >= Q * sum(layer.embedding_dim for layer, _ in inputs):
            return "windows"
        return rows

    def _forward_cpu(self, inputs, lengths):
        from numconv.kernels.cpu import windows as K
        N, Tp = np.shape(inputs[0][1])
        T = Tp - 2 * self.pad
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (N,) or lengths.min(initial=1) < 1 or lengths.max(initial=0) > T:
            raise ValueError(f"lengths must give each of the {N} sentences a length in [1, {T}], "
                             f"got {lengths.tolist()}")
        starts = np.zeros(N + 1, np.int64)
        np.cumsum(lengths, out=starts[1:])
        Q, w = int(starts[-1]), self.window
        weight = self.conv.params["weight"]            # (H, C, w)
        H, C = weight.shape[0], weight.shape[1]
        products = self._window_products(inputs, starts)
        if isinstance(products, str):                  # per window
            parts = [layer.forward(ids) for layer, ids in inputs]
            xt = np.ascontiguousarray(np.concatenate(parts, axis=2) if len(parts) > 1
                                      else parts[0])
            col = buffers.empty((Q, w * C), xt.dtype)
            K.gather_windows(col, xt, starts, w)
            W2 = np.ascontiguousarray(weight.transpose(0, 2, 1)).reshape(-1, w * C)
            z = buffers.empty((Q, H), xt.dtype)
            K.matmul_nt(z, col, W2)
            z += self.conv.params["bias"]
            first = dict(col=col, W2=W2)
        else:                                          # per distinct id of each table
            z = buffers.empty((Q, H), weight.dtype)
            z[:] = self.conv.params["bias"]
            tables, c0 = [], 0
            for (layer, _), d in zip(inputs, products):
                D = layer.embedding_dim
                # M[d, k*H + h] = W[h, c0 + d, k]: every tap's weights on this table's channels
                M = np.ascontiguousarray(weight[:, c0:c0 + D, :].transpose(1, 2, 0)
                                         ).reshape(D, w * H)
                Eu = np.ascontiguousarray(layer.weight[d.uniq])
                P = buffers.empty((d.uniq.size, w * H), z.dtype)
                K.matmul_nn(P, Eu, M)
                K.sum_tap_rows(z, P, d)
                tables.append((layer, d, c0, M, Eu))
                c0 += D
            first = dict(tables=tables)
        h = self.act.forward(z)
        n_idx = np.repeat(np.arange(N), lengths)
        t_idx = np.arange(Q) - starts[n_idx]
        mask = None
        if self.hidden_dropout and self.dropout.training:
            d = self.dropout                 # the dense (N, H, T) mask, at the real tokens
            dense = F.dropout_mask((N, H, T), d.p, d.seed, d.step, z.dtype)
            mask = np.ascontiguousarray(dense.transpose(0, 2, 1)[n_idx, t_idx])
            h = h * mask
        Wo = self.out.params["weight"][:, :, 0]
        scores = np.empty((Q, Wo.shape[0]), z.dtype)
        K.matmul_nt(scores, h, np.ascontiguousarray(Wo))
        scores += self.out.params["bias"]
        logits = buffers.zeros((N, Wo.shape[0], T), z.dtype)
        logits.transpose(0, 2, 1)[n_idx, t_idx] = scores
        self._cpu = dict(first, Tp=Tp, starts=starts, h=h, mask=mask, n_idx=n_idx, t_idx=t_idx)
        return logits

    def _backward_cpu(self, dlogits):
        from numconv.kernels.cpu import windows as K
        c = self._cpu
        dscores = np.ascontiguousarray(dlogits.transpose(0, 2, 1)[c["n_idx"], c["t_idx"]])
        Wo = np.ascontiguousarray(self.out.params["weight"][:, :, 0])
        dWo = np.empty_like(Wo)
        K.matmul_tn(dWo, dscores, c["h"])
        self.out.grads["weight"] += dWo[:, :, None]
        dbo = np.empty(Wo.shape[0], Wo.dtype)
        K.column_sums(dbo, dscores)
        self.out.grads["bias"] += dbo
        dh = buffers.empty(c["h"].shape, c["h"].dtype)
        K.matmul_nn(dh, dscores, Wo)
        if c["mask"] is not None:
            dh *= c["mask"]
        dz = self.act.backward_inplace(dh)          # dh is this step's own array
        db = np.empty(dz.shape[1], dz.dtype)
        K.column_sums(db, dz)
        self.conv.grads["bias"] += db
        if "tables" in c:
            self._backward_by_id(dz, c["tables"])
            return None
        W2 = c["W2"]
        dW2 = np.empty_like(W2)
        K.matmul_tn(dW2, dz, c["col"])
        H, C = W2.shape[0], W2.shape[1] // self.window
        self.conv.grads["weight"] += dW2.reshape(H, self.window, C).transpose(0, 2, 1)
        dcol = buffers.empty(c["col"].shape, c["col"].dtype)
        K.matmul_nn(dcol, dz, W2)
        dxt = buffers.empty((len(c["starts"]) - 1, c["Tp"], C), W2.dtype)
        K.scatter_windows(dxt, dcol, c["starts"], self.window)
        start = 0
        for layer in self._inputs():
            stop = start + layer.embedding_dim
            layer.backward(dxt[:, :, start:stop])
            start = stop
        return None

    def _backward_by_id(self, dz, tables):
        from numconv.kernels.cpu import windows as K
        H, w = dz.shape[1], self.window
        dweight = self.conv.grads["weight"]            # (H, C, w)
        for layer, d, c0, M, Eu in tables:
            D = layer.embedding_dim
            G = buffers.empty((d.uniq.size, w * H), dz.dtype)
            K.gather_tap_grads(G, dz, d)
            dM = np.empty_like(M)
            K.matmul_tn(dM, Eu, G)
            dweight[:, c0:c0 + D, :] += dM.reshape(D, w, H).transpose(2, 0, 1)
            if not layer.frozen:
                dEu = buffers.empty(Eu.shape, Eu.dtype)
                K.matmul_nt(dEu, G, M)
                layer.backward_rows(d.uniq, dEu)

    def backward(self, dlogits):
        if not dev.on_gpu(dlogits):
            return self._backward_cpu(dlogits)
        dh = self.out.backward(dlogits)
        if self.hidden_dropout:
            dh = self.dropout.backward(dh)
        dx = self.conv.backward(self.act.backward(dh))
        start = 0
        for layer in self._inputs():
            if not layer.frozen:
                layer.backward(dev.transpose(dev.split_channels(dx, start, layer.embedding_dim)))
            start += layer.embedding_dim
        return None


def max_norm_(linear, max_norm=3.0):
    """Rescale every row of a Linear's weight (one output unit's weights) whose L2 norm exceeds
    `max_norm` back to it (Kim 2014's constraint, applied after each update)."""
    w = linear.params["weight"]
    if dev.on_gpu(w):
        from numconv.kernels.cuda.nn import max_norm_rows_
        max_norm_rows_(w, max_norm)
        return
    norms = np.sqrt((w.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    scale = np.minimum(1.0, max_norm / np.maximum(norms, 1e-12))
    w *= scale.astype(w.dtype)
