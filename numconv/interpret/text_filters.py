"""The text analogue of drawing first-layer filters: for each filter of a Kim-CNN's first
convolutions, the n-grams of the training data that excite it most. Each sentence contributes the
window its max-pooling picks (the n-gram the classifier actually sees), and the distinct n-grams
with the highest activations are listed; window positions over padding show as '_'."""
from dataclasses import dataclass

import numpy as np

BATCH = 256


@dataclass
class FilterNgrams:
    conv: str          # 'conv0', ...
    width: int         # n-gram length
    filter: int        # map index within the conv
    top: list          # [(n-gram text, activation)], highest first


def kim_filter_ngrams(run_dir, top=5, which="best"):
    """[FilterNgrams] for every first-layer filter of a Kim-CNN text run."""
    from numconv.text.models import window_mask
    from numconv.text.train import _norm_word, _splits, load_data, load_text_run, pad_batch
    doc, cfg, vocab, model = load_text_run(run_dir, which)
    if cfg.model != "kim":
        raise ValueError(f"{run_dir} is a {cfg.model} text run; n-gram listing covers Kim-CNN "
                         f"runs (--model kim), whose first layer is a bank of n-gram filters")
    train = _splits(cfg, load_data(cfg))[0]
    ids = [np.array(vocab.encode([_norm_word(w, cfg) for w in s]), np.int64)
           for s in train.tokens]
    pad = model.pad
    best = {}   # (conv index, filter) -> {ngram: activation}
    for start in range(0, len(ids), BATCH):
        rows = range(start, min(len(ids), start + BATCH))
        batch, lengths = pad_batch([ids[i] for i in rows], pad)
        x = model.embedding.forward(batch).transpose(0, 2, 1)
        if model.variant == "multichannel":
            x = np.concatenate([x, model.embedding_static.forward(batch).transpose(0, 2, 1)], 1)
        x = np.ascontiguousarray(x)
        for c, (conv, k) in enumerate(zip(model.convs(), model.widths)):
            y = conv.forward(x)
            valid = window_mask(lengths, pad, k, y.shape[2])
            y = np.where(valid[:, None, :], y, -np.inf)
            pos = y.argmax(axis=2)                         # (N, maps): the max-pooled window
            for r, i in enumerate(rows):
                tokens = train.tokens[i]
                for f in range(y.shape[1]):
                    t = int(pos[r, f])
                    gram = " ".join(tokens[j] if 0 <= j < len(tokens) else "_"
                                    for j in range(t - pad, t - pad + k))
                    table = best.setdefault((c, f), {})
                    v = float(y[r, f, t])
                    if v > table.get(gram, -np.inf):
                        table[gram] = v
    out = []
    for (c, f), table in sorted(best.items()):
        ranked = sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        out.append(FilterNgrams(f"conv{c}", model.widths[c], f, ranked))
    return out
