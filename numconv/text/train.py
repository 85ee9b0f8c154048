"""`numconv train-text` as a library call: load the text, build the vocabulary (and pretrained
vectors), build a Kim CNN or a window tagger, train with `numconv.train.loop.fit`, write the report.

Run directory (as for images, plus the vocabulary):
  config.json           the resolved configuration, classes/tags, vocabulary size, vector coverage
  vocab.json            the vocabulary's words in row order (rows 0 and 1: padding, unknown)
  metrics.jsonl         one JSON line per epoch
  checkpoints/last.npz  everything needed to resume; checkpoints/best.npz best validation accuracy
  report.json           test accuracy (and chunk F1 for tagging; the bag-of-words baseline for
                        classification) of the best checkpoint
With `cv=k`, fold i is trained in <run_dir>/fold-<i> and <run_dir>/cv.json holds the mean and
standard deviation over folds.

Early stopping: after each epoch, training stops once validation accuracy has not improved for
`patience` epochs; the best epoch's checkpoint is the one tested. The rule reads only the metrics
history, so a resumed run stops exactly where the uninterrupted one would.

With device='cuda' the model lives on the GPU: each step sends its batch of ids (host arrays, as
the embeddings take them) and brings back the loss and the count of correct answers; evaluation
copies back each batch's logits (the tagger's Viterbi decoding runs on the host over them).
"""
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from numconv.nn import SoftmaxCrossEntropy
from numconv.nn import device as dev
from numconv.ops import nn as F
from numconv.optim import Schedule, make_optimizer
from numconv.text import data as textdata
from numconv.text.decode import allowed_transitions, viterbi, viterbi_scores
from numconv.text.metrics import chunk_scores
from numconv.text.models import KimCNN, WindowTagger, caps_feature, max_norm_
from numconv.text.tokenize import Vocabulary
from numconv.train import loop
from numconv.train.checkpoint import (CheckpointError, atomic_write_json, checkpoint_path,
                                      load_checkpoint, prepare_run_dir, removed_if_unstarted,
                                      restore_training_state)
from numconv.train.image import EpochBatches, resolve_run_device

MODELS = ("kim", "window")
DECODERS = ("viterbi", "argmax")
LOSSES = ("wll", "sll")
# cosine: from --lr down to 0 over --epochs; plateau: halved after each epoch whose validation
# accuracy is not a new best.
TEXT_SCHEDULES = ("constant", "cosine", "plateau")
RECIPES = {
    # Kim (2014): Adadelta (rho 0.95, eps 1e-6), batch 50, dropout 0.5, max-norm 3, 300-d vectors.
    # His code trains all 25 epochs and tests the best validation epoch: patience 25 does that
    # (patience 5 stopped MR folds before their best epoch, 8-25; 74.72% against 75.91%).
    "kim": dict(epochs=25, batch_size=50, optimizer="adadelta", lr=1.0, embed_dim=300,
                patience=25, dropout=0.5),
    # Collobert et al. (2011) window network: 50-d words + 5-d caps, window 5, 300 hardtanh units.
    # Adam in place of their per-layer SGD rates: it needs no tuning and converges in a few epochs.
    "window": dict(epochs=10, batch_size=32, optimizer="adam", lr=1e-3, embed_dim=50, patience=3,
                   dropout=0.0),
}


@dataclass
class TextConfig:
    model: str = "kim"
    dataset: str = textdata.DEFAULT_DATASET
    variant: str = "rand"              # Kim: rand, static, non-static, multichannel; window:
                                       # static freezes --vectors, else they are fine-tuned
    vectors: str = None                # file path or 'glove-6b-50d'
    vectors_format: str = "auto"
    vectors_scale: float = 1.0         # every pretrained vector multiplied by this at the start
    text_column: str = None
    label_column: str = None
    tags: str = None                   # tagging: pos, chunk, ner (CoNLL column)
    encoding: str = None
    tokenizer: str = None              # kim (classification default) or whitespace
    lower: bool = True
    min_freq: int = 1
    epochs: int = None
    batch_size: int = None
    optimizer: str = None
    lr: float = None
    embed_dim: int = None
    widths: tuple = (3, 4, 5)
    maps: int = 100
    dropout: float = None              # kim 0.5; window 0 (Collobert et al. use none)
    max_norm: float = 3.0
    window: int = 5
    hidden: int = 300
    caps: bool = True
    features: tuple = ()               # tagging: further CoNLL input columns, e.g. ('pos',)
    decode: str = "viterbi"            # tagging: viterbi (transitions seen in training) or argmax
    loss: str = "wll"                  # tagging: wll (a softmax per token) or sll (per sentence,
                                       # with learned transition scores; Collobert et al. 3.4.2)
    schedule: str = "constant"         # learning rate over the epochs: constant, cosine, plateau
    feature_dim: int = 10
    activation: str = "hardtanh"
    patience: int = None
    cv: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    limit: int = None
    threads: int = None
    device: str = None                 # cpu, cuda or auto; None: cpu (a resumed run: its own)
    seed: int = 0
    run_dir: str = "runs/text"
    baseline: bool = True
    notes: list = field(default_factory=list)

    @property
    def task(self):
        return "tag" if self.model == "window" else "classify"

    def resolve(self):
        if self.model not in MODELS:
            raise ValueError(f"model {self.model!r} is unknown; use one of {', '.join(MODELS)}")
        for key, value in RECIPES[self.model].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.tokenizer is None:
            self.tokenizer = "kim" if self.task == "classify" else "whitespace"
        self.widths = tuple(int(w) for w in self.widths)
        for key, lo in (("epochs", 1), ("batch_size", 1), ("min_freq", 1), ("maps", 1),
                        ("hidden", 1), ("embed_dim", 1), ("patience", 1)):
            if getattr(self, key) < lo:
                raise ValueError(f"--{key.replace('_', '-')} must be >= {lo}, got "
                                 f"{getattr(self, key)}")
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"--widths must be positive filter widths, got {self.widths}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.cv == 1 or self.cv < 0:
            raise ValueError(f"--cv must be 0 (off) or >= 2 folds, got {self.cv}")
        self.features = tuple(self.features or ())
        for name in self.features:
            if name not in textdata.TAG_COLUMNS:
                raise ValueError(f"--features {name!r} is not a CoNLL column; use "
                                 f"{', '.join(textdata.TAG_COLUMNS)} (comma-separated)")
        if self.loss not in LOSSES:
            raise ValueError(f"--loss {self.loss!r} is unknown; use wll (word level) or sll "
                             f"(sentence level)")
        if self.loss == "sll" and self.model != "window":
            raise ValueError("--loss sll (sentence-level likelihood) is for taggers: use it with "
                             "--model window")
        if self.features and self.model != "window":
            raise ValueError("--features (CoNLL input columns such as pos) needs --model window")
        if self.schedule not in TEXT_SCHEDULES:
            raise ValueError(f"--schedule {self.schedule!r} is unknown; use one of "
                             f"{', '.join(TEXT_SCHEDULES)}")
        if self.decode not in DECODERS:
            raise ValueError(f"--decode {self.decode!r} is unknown; use one of "
                             f"{', '.join(DECODERS)}")
        if self.feature_dim < 1:
            raise ValueError(f"--feature-dim must be >= 1, got {self.feature_dim}")
        if self.model == "window" and self.variant not in ("rand", "static", "non-static"):
            raise ValueError(f"--variant {self.variant} is a Kim CNN variant; the window tagger "
                             f"takes static (frozen vectors) or non-static (fine-tuned)")
        if self.model == "window" and self.variant == "static" and not self.vectors:
            raise ValueError("--variant static needs --vectors (a GloVe/word2vec/fastText file, "
                             "or glove-6b-50d)")
        if self.model == "kim" and self.variant != "rand" and not self.vectors:
            raise ValueError(f"--variant {self.variant} needs --vectors (a GloVe/word2vec/"
                             f"fastText file, or glove-6b-50d)")
        if not (isinstance(self.vectors_scale, (int, float)) and self.vectors_scale > 0):
            raise ValueError(f"--vectors-scale must be a number > 0, got {self.vectors_scale!r}")
        if self.vectors_scale != 1 and not self.vectors:
            raise ValueError("--vectors-scale rescales pretrained vectors: give --vectors too")
        self.device = resolve_run_device(self.device)
        return self


# ------------------------------------------------------------------------------------ encoding

@dataclass
class Encoded:
    """One split as row indices: ids [array], caps [array] (tagging), y (N,) classes or
    [array] tags; `len(y)` is the number of sentences (what EpochBatches needs); feats: one
    [array] per input feature column (tagging with --features), else None."""
    ids: list
    caps: list
    y: object
    tokens: list
    feats: list = None


def _norm_word(w, cfg):
    if cfg.task == "tag":
        w = "".join("0" if c.isdigit() else c for c in w)   # Collobert: digits carry no meaning
        return w.lower() if cfg.lower else w
    return w


def feature_vocabularies(cfg, train):
    """{feature name: Vocabulary of its values in the training split} (rows 0/1 padding and
    unknown, as for words)."""
    if not cfg.features:
        return {}
    if train.features is None:
        raise ValueError(f"dataset {cfg.dataset} has no feature columns for --features "
                         f"{','.join(cfg.features)}")
    return {name: Vocabulary.build([s[k] for s in train.features])
            for k, name in enumerate(cfg.features)}


def encode_split(split, vocab, cfg, classes, feature_vocabs=None):
    index = {c: i for i, c in enumerate(classes)}
    feats = None
    if cfg.features:
        if split.features is None:
            raise ValueError(f"this tagger reads the input column(s) {', '.join(cfg.features)} "
                             f"beside each word, and the text has none")
        feats = [[np.array(feature_vocabs[name].encode(s[k]), np.int64) for s in split.features]
                 for k, name in enumerate(cfg.features)]
    ids = [np.array(vocab.encode([_norm_word(w, cfg) for w in s]), np.int64) for s in split.tokens]
    caps = [np.array([caps_feature(w) for w in s], np.int64) for s in split.tokens] \
        if cfg.task == "tag" else None

    def cls(label):
        if label not in index:
            shown = ", ".join(map(str, classes[:12])) + ("..." if len(classes) > 12 else "")
            raise ValueError(f"label {label!r} does not occur in the training split (classes: "
                             f"{shown}); check the label column or the test file")
        return index[label]

    if cfg.task == "tag":
        y = [np.array([cls(t) for t in tags], np.int64) for tags in split.labels]
    else:
        y = np.array([cls(lab) for lab in split.labels], np.int64)
    return Encoded(ids, caps, y, split.tokens, feats)


def pad_batch(seqs, pad, fill=0):
    """Sentences laid out with `pad` padding entries before and at least `pad` after: (N, T)
    with T = longest + 2 pad, and the lengths."""
    lengths = np.array([len(s) for s in seqs], np.int64)
    T = int(lengths.max(initial=0)) + 2 * pad
    out = np.full((len(seqs), max(T, 2 * pad + 1)), fill, np.int64)
    for i, s in enumerate(seqs):
        out[i, pad:pad + len(s)] = s
    return out, lengths


def make_preparer(cfg, model_pad):
    def prepare(split, idx, rng, augment):
        ids, lengths = pad_batch([split.ids[i] for i in idx], model_pad)
        if cfg.task == "classify":
            return (ids, lengths), split.y[idx]
        caps, _ = pad_batch([split.caps[i] for i in idx], model_pad)
        T = ids.shape[1] - 2 * model_pad
        tags = np.zeros((len(idx), T), np.int64)
        mask = np.zeros((len(idx), T), bool)
        for r, i in enumerate(idx):
            tags[r, :lengths[r]] = split.y[i]
            mask[r, :lengths[r]] = True
        if split.feats:
            feats = [pad_batch([column[i] for i in idx], model_pad)[0] for column in split.feats]
            return (ids, caps, lengths, feats), (tags, mask)
        return (ids, caps, lengths), (tags, mask)
    return prepare


def tagging_loss(loss_fn, logits, tags, mask):
    """Per-token softmax cross-entropy of logits (N, K, T), averaged over real tokens.
    -> (loss, dlogits (N, K, T), correct, count)."""
    N, K, T = logits.shape
    if dev.on_gpu(logits):
        return _tagging_loss_gpu(loss_fn, logits, tags, mask)
    flat = np.ascontiguousarray(logits.transpose(0, 2, 1)).reshape(-1, K)
    w = mask.reshape(-1).astype(np.float64)
    loss, dflat = loss_fn(flat, tags.reshape(-1), w)
    pred = flat.argmax(axis=1)
    correct = int(((pred == tags.reshape(-1)) & mask.reshape(-1)).sum())
    dlogits = np.ascontiguousarray(dflat.reshape(N, T, K).transpose(0, 2, 1))
    return loss, dlogits, correct, int(mask.sum())


def sentence_tagging_loss(model, logits, tags, mask):
    """The sentence-level loss (numconv.text.sll) of logits (N, K, T) under the model's transition
    scores, whose gradient it adds to the model's. -> (loss, dlogits, correct, count) as
    tagging_loss, `correct` counting per-token argmax hits. On the GPU the scores (a few values a
    token) come to the host for the recursions and dlogits goes back."""
    from numconv.text.sll import sentence_loss
    host = dev.to_host(logits)          # (a host array stays as it is)
    loss, dlogits, dtrans = sentence_loss(host, dev.to_host(model.params["transitions"]), tags,
                                          mask.sum(axis=1))
    if dev.on_gpu(logits):
        dlogits, dtrans = dev.to_device(dlogits), dev.to_device(dtrans)
    F.accumulate(model.grads["transitions"], dtrans)
    correct = int(((host.argmax(axis=1) == tags) & mask).sum())
    return loss, dlogits, correct, int(mask.sum())


def _tagging_loss_gpu(loss_fn, logits, tags, mask):
    """tagging_loss for logits on the GPU: dlogits stays there; the tags and mask (the batch) go
    over, and the loss and the count of correct tokens come back."""
    N, K, T = logits.shape
    flat = dev.transpose(logits).reshape(N * T, K)
    labels = tags.reshape(-1)
    keep = mask.reshape(-1)
    loss, dflat = loss_fn(flat, labels, keep.astype(np.float64))
    correct = F.count_correct(flat, np.where(keep, labels, -1))   # -1: padding never counts
    return loss, dev.transpose(dflat.reshape(N, T, K)), correct, int(mask.sum())


# ------------------------------------------------------------------------------- building blocks

def _sorted_classes(labels):
    uniq = set(labels)
    try:
        return sorted(uniq, key=lambda s: (0, int(s)))
    except ValueError:
        return sorted(uniq)


def build_model(cfg, vocab_size, num_classes, table=None, feature_vocabs=None):
    """The run's model; `table` (V, D) pretrained rows (or None: random / loaded later);
    `feature_vocabs` {name: vocabulary} of the tagger's input feature columns."""
    if cfg.model == "kim":
        if table is None and cfg.variant != "rand":
            table = np.zeros((vocab_size, cfg.embed_dim), np.float32)   # state loaded after
        return KimCNN(vocab_size, num_classes, embed_dim=cfg.embed_dim, widths=cfg.widths,
                      maps=cfg.maps, dropout=cfg.dropout, variant=cfg.variant, pretrained=table,
                      seed=cfg.seed)
    if table is None and cfg.variant == "static":
        table = np.zeros((vocab_size, cfg.embed_dim), np.float32)       # state loaded after
    return WindowTagger(vocab_size, num_classes, embed_dim=cfg.embed_dim, window=cfg.window,
                        hidden=cfg.hidden, caps_dim=5 if cfg.caps else 0,
                        activation=cfg.activation, pretrained=table, seed=cfg.seed,
                        features=[(n, len(feature_vocabs[n])) for n in cfg.features],
                        feature_dim=cfg.feature_dim, dropout=cfg.dropout,
                        freeze_words=cfg.variant == "static", sll=cfg.loss == "sll")


def _vocab_and_vectors(cfg, train, others):
    """Vocabulary from the training text (min_freq); with vectors, also the other splits' words
    that have a pretrained vector (Kim's code does the same: they are known, not learned)."""
    norm = [[_norm_word(w, cfg) for w in s] for s in train.tokens]
    base = Vocabulary.build(norm, cfg.min_freq)
    if not cfg.vectors:
        return base, None, None
    from numconv.text.vectors import load_vectors
    extra = sorted({_norm_word(w, cfg) for sp in others for s in sp.tokens for w in s} -
                   set(base.words))
    candidates = Vocabulary(base.words[2:] + extra)
    pre = load_vectors(cfg.vectors, candidates, cfg.vectors_format)
    keep = [w for i, w in enumerate(candidates.words[2:], 2)
            if w in base.index or pre.found[i]]
    vocab = Vocabulary(keep)
    rows = np.array([candidates.index[w] for w in vocab.words])
    pre.table, pre.found = pre.table[rows], pre.found[rows]
    if cfg.vectors_scale != 1:
        # the words without a vector follow: their U[-a, a] is matched to the scaled variance
        pre.table = pre.table * np.float32(cfg.vectors_scale)
        pre.variance = pre.variance * cfg.vectors_scale ** 2
    rng = np.random.default_rng([cfg.seed, 3])
    table = pre.embedding_matrix(rng)
    train_words = [i for i, w in enumerate(vocab.words) if w in base.index and i > 1]
    info = {"vectors": pre.source, "vector_dim": pre.dim, "coverage": pre.coverage,
            "train_coverage": float(pre.found[train_words].mean()) if train_words else 0.0,
            "unknown_init_scale": pre.init_scale()}
    return vocab, table, info


def _carve(split, fraction, seed, salt):
    n = len(split)
    k = int(round(n * fraction))
    if k < 1 or k >= n:
        raise ValueError(f"cannot hold out {fraction:g} of {n} sentences; give more data or "
                         f"another fraction")
    order = np.random.default_rng([seed, salt]).permutation(n)
    return split.subset(np.sort(order[k:])), split.subset(np.sort(order[:k]))


def load_data(cfg):
    return textdata.load_text_data(cfg.dataset, cfg.task, text_column=cfg.text_column,
                                   label_column=cfg.label_column, encoding=cfg.encoding,
                                   tokenizer=cfg.tokenizer, lower=cfg.lower, tags=cfg.tags,
                                   features=cfg.features)


def _splits(cfg, data, fold=None):
    """(train, val, test, notes) for a run, or for fold `fold` of cross-validation."""
    notes = []
    train, val, test = data.train, data.val, data.test
    if cfg.limit:
        train = train.subset(range(min(cfg.limit, len(train))))
    if fold is not None:
        everything = train if test is None else textdata.TextSplit(
            train.tokens + test.tokens, train.labels + test.labels,
            None if train.features is None or test.features is None
            else train.features + test.features)
        folds = np.random.default_rng([cfg.seed, 7]).permutation(len(everything)) % cfg.cv
        train = everything.subset(np.flatnonzero(folds != fold))
        test = everything.subset(np.flatnonzero(folds == fold))
        val = None
    elif test is None:
        train, test = _carve(train, cfg.test_fraction, cfg.seed, 5)
        notes.append(f"{data.name} has no test split: held out {len(test)} sentences "
                     f"({cfg.test_fraction:.0%}) of its training data")
    if val is None:
        train, val = _carve(train, cfg.val_fraction, cfg.seed, 6)
    if not len(train):
        raise ValueError(f"dataset {cfg.dataset} has no training sentences")
    return train, val, test, notes


# ------------------------------------------------------------------------------------ evaluation

def predict_logits(model, split, prepare, batch_size=256):
    model.eval()
    out = []
    for start in range(0, len(split.y), batch_size):
        idx = np.arange(start, min(len(split.y), start + batch_size))
        x, _ = prepare(split, idx, None, False)
        logits = dev.forward_to_host(model, x)      # (ids, lengths...) go as host arrays
        if logits.ndim == 3:
            out.extend(logits[r, :, :len(split.ids[i])].T for r, i in enumerate(idx))
        else:
            out.append(logits)
    if model.__class__ is KimCNN:
        return np.concatenate(out) if out else np.zeros((0, 1), np.float32)
    return out


def tag_decoder(cfg, transitions, model=None):
    """logits (T, K) -> tag indices (T,). Viterbi decoding: for a tagger trained with the
    sentence-level loss, over its learned transition scores as they are now in `model`; else over
    the allowed transitions (a (K + 1, K) bool matrix, see numconv.text.decode) when the run has
    them. Otherwise argmax."""
    if cfg.decode == "viterbi" and cfg.loss == "sll":
        scores = np.asarray(dev.to_host(model.params["transitions"]), np.float64)
        return lambda logits: viterbi_scores(logits, scores)
    if cfg.decode == "viterbi" and transitions is not None:
        allowed = np.asarray(transitions, bool)
        return lambda logits: viterbi(logits, allowed)
    return lambda logits: np.argmax(logits, axis=1)


def _transitions_from_doc(doc):
    t = doc.get("transitions")
    return None if t is None else np.asarray(t, bool)


def evaluate_split(model, split, prepare, loss_fn, classes, task, decode=None):
    """Loss and accuracy (tagging: token accuracy of the decoded tags, and chunk F1 for chunk
    tags). `decode`: logits (T, K) -> tags, default argmax."""
    logits = predict_logits(model, split, prepare)
    if task == "classify":
        loss, _ = loss_fn(logits, split.y)
        pred = np.argmax(logits, axis=1)
        return {"loss": float(loss), "acc": float(np.mean(pred == split.y))}, logits
    flat = np.concatenate(logits)
    ys = np.concatenate(split.y)
    if "transitions" in model.params:      # trained per sentence: report that loss
        loss = _sentence_level_loss(logits, split.y, dev.to_host(model.params["transitions"]))
    else:
        loss, _ = loss_fn(flat, ys)
    decode = decode or (lambda l: np.argmax(l, axis=1))
    pred = [decode(l) for l in logits]
    metrics = {"loss": float(loss), "acc": float(np.mean(np.concatenate(pred) == ys))}
    if is_chunk_tagset(classes):
        scores = chunk_scores([[classes[t] for t in y] for y in split.y],
                              [[classes[t] for t in p] for p in pred])
        metrics.update(f1=scores["f1"], precision=scores["precision"], recall=scores["recall"])
    return metrics, pred


def _sentence_level_loss(logits, tags, transitions):
    """The sentence-level loss of per-sentence scores [(T_i, K)] and tags [(T_i,)], per token."""
    from numconv.text.sll import sentence_loss
    K = transitions.shape[1]
    lengths = np.array([len(t) for t in tags], np.int64)
    T = max(1, int(lengths.max(initial=0)))
    padded = np.zeros((len(tags), K, T), np.float64)
    gold = np.zeros((len(tags), T), np.int64)
    for n, (l, t) in enumerate(zip(logits, tags)):
        padded[n, :, :len(t)] = np.asarray(l).T
        gold[n, :len(t)] = t
    return sentence_loss(padded, transitions, gold, lengths)[0]


def is_chunk_tagset(classes):
    return any(c[:2] in ("B-", "I-", "E-", "S-") for c in classes)


def _patience_exhausted(history, patience):
    """No better validation score (as model selection ranks epochs) for `patience` epochs."""
    if not history:
        return False
    best = max(range(len(history)),
               key=lambda i: (history[i].get("val_score", history[i]["val_acc"]), -i))
    return len(history) - 1 - best >= patience


# -------------------------------------------------------------------------------------- training

def _write_json(run_dir, name, doc):
    atomic_write_json(os.path.join(run_dir, name), doc)


def _read_json(run_dir, name):
    path = os.path.join(run_dir, name)
    if not os.path.exists(path):
        raise CheckpointError(f"{run_dir} has no {name}: not a numconv text run directory")
    with open(path) as f:
        return json.load(f)


def config_from_doc(doc):
    known = TextConfig.__annotations__
    cfg = TextConfig(**{k: v for k, v in doc.items() if k in known})
    cfg.widths = tuple(cfg.widths)
    cfg.features = tuple(cfg.features or ())
    return cfg


def _feature_vocabs_from_doc(doc):
    saved = doc.get("feature_vocabs") or {}
    missing = [n for n in doc.get("features") or () if n not in saved]
    if missing:
        raise CheckpointError(f"the run's config.json lacks the values of its input feature(s) "
                              f"{', '.join(missing)}; the run directory is damaged")
    return {n: Vocabulary.from_json(words) for n, words in saved.items()}


def _train_one(cfg, data, run_dir, fold=None, callbacks=None, resume=False, stop_flag=None):
    cb = callbacks or loop.Callbacks()
    run_dir = prepare_run_dir(run_dir, resume=resume)
    train, val, test, notes = _splits(cfg, data, fold)
    for line in notes:
        cb.call("message", line)
    state = None
    if resume:
        doc = _read_json(run_dir, "config.json")
        device = cfg.device                       # where to run: the caller's (resolved) choice
        threads = cfg.threads                     # and on how many threads (it changes no result)
        cfg = config_from_doc(doc)
        cfg.device = device
        if threads is not None:
            cfg.threads = threads
        cfg.resolve()
        if doc.get("device") != cfg.device:       # config.json: where it trains now
            doc["device"] = cfg.device
            _write_json(run_dir, "config.json", doc)
        vocab = Vocabulary.from_json(_read_json(run_dir, "vocab.json"))
        classes = doc["classes"]
        fvocabs = _feature_vocabs_from_doc(doc)
        model = build_model(cfg, len(vocab), len(classes), feature_vocabs=fvocabs)
        model_state, optim_state, sched_state, meta = load_checkpoint(checkpoint_path(run_dir))
        state = loop.TrainState.from_meta(meta)
        vec_info = doc.get("vector_info")
    else:
        if cfg.task == "tag":
            # A tag set is the annotation scheme's, not the training sample's: CoNLL-2000's test
            # file has I-LST, which its training file lacks. Such tags are kept (the model can
            # never predict them, and the scores count them as misses), and said.
            seen = {t for s in train.labels for t in s}
            classes = _sorted_classes({t for sp in (train, val, test) for s in sp.labels
                                       for t in s})
            unseen = [c for c in classes if c not in seen]
            if unseen:
                cb.call("message", f"tags never seen in training (scored, never predicted): "
                                   f"{', '.join(unseen)}")
        else:
            classes = _sorted_classes(train.labels)
        vocab, table, vec_info = _vocab_and_vectors(cfg, train, [val, test])
        if vec_info:
            cfg.embed_dim = vec_info["vector_dim"]
            cb.call("message", f"vectors {vec_info['vectors']}: {vec_info['coverage']:.1%} of the "
                               f"{len(vocab) - 2} vocabulary words have one "
                               f"({vec_info['train_coverage']:.1%} of the training words); the "
                               f"rest start from U[-{vec_info['unknown_init_scale']:.3f}, "
                               f"{vec_info['unknown_init_scale']:.3f}]")
        fvocabs = feature_vocabularies(cfg, train)
        model = build_model(cfg, len(vocab), len(classes), table, fvocabs)
    enc = {name: encode_split(sp, vocab, cfg, classes, fvocabs)
           for name, sp in (("train", train), ("val", val), ("test", test))}
    prepare = make_preparer(cfg, model.pad)
    decoder = lambda m: None    # noqa: E731  (classification: no tag decoding)
    if cfg.task == "tag":
        transitions = _transitions_from_doc(doc) if resume else \
            allowed_transitions(enc["train"].y, len(classes))
        # a function of the model: learned transition scores change as it trains
        decoder = lambda m: tag_decoder(cfg, transitions, m)   # noqa: E731
    loss_fn = SoftmaxCrossEntropy()
    # before the optimiser is made: it updates the arrays it is given, wherever they live
    dev.move_model(model, cfg.device)
    optimizer = make_optimizer(cfg.optimizer, model.named_parameters(), cfg.lr)
    schedule = Schedule(cfg.schedule, cfg.lr, cfg.epochs, factor=0.5, patience=0)
    if resume:
        restore_training_state(run_dir, model, optimizer, schedule, model_state, optim_state,
                               sched_state)
    else:
        doc = dict(asdict(cfg), kind="text", task=cfg.task, classes=list(classes),
                   vocab_size=len(vocab), parameters=int(model.num_parameters()),
                   dataset_source=data.source, fold=fold, vector_info=vec_info,
                   splits={"train": len(train), "val": len(val), "test": len(test)},
                   feature_vocabs={n: v.to_json() for n, v in fvocabs.items()})
        doc["widths"] = list(cfg.widths)
        doc["features"] = list(cfg.features)
        if cfg.task == "tag":
            doc["transitions"] = transitions.astype(int).tolist()
        _write_json(run_dir, "vocab.json", vocab.to_json())
        _write_json(run_dir, "config.json", doc)

    if cfg.task == "classify":
        def step_fn(model_, batch):
            x, y = batch
            logits = model_.forward(x)
            loss, dlogits = loss_fn(logits, y)
            model_.backward(dlogits)
            return loss, F.count_correct(logits, y), len(y)
    else:
        def step_fn(model_, batch):
            x, (tags, mask) = batch
            logits = model_.forward(x)
            if cfg.loss == "sll":
                loss, dlogits, correct, count = sentence_tagging_loss(model_, logits, tags, mask)
            else:
                loss, dlogits, correct, count = tagging_loss(loss_fn, logits, tags, mask)
            model_.backward(dlogits)
            return loss, correct, count

    def evaluate(model_):
        metrics, _ = evaluate_split(model_, enc["val"], prepare, loss_fn, classes, cfg.task,
                                    decoder(model_))
        if "f1" in metrics:
            cb.call("message", f"  validation chunk F1 {metrics['f1']:.2f}")
            # chunking is scored by chunk F1 (conlleval): the best epoch is chosen by it too
            metrics["score"] = metrics["f1"] / 100
        return metrics

    after_step = (lambda m: max_norm_(m.fc, cfg.max_norm)) \
        if cfg.model == "kim" and cfg.max_norm else None
    state = state or loop.TrainState()
    finished, early = True, False
    while state.epoch < cfg.epochs:
        if _patience_exhausted(state.history, cfg.patience):
            early = True
            break
        state, finished = loop.fit(
            model, optimizer, schedule, epochs=state.epoch + 1,
            batches_for_epoch=lambda e: EpochBatches(enc["train"], cfg.batch_size, cfg.seed, e,
                                                     prepare),
            step_fn=step_fn, evaluate=evaluate, run_dir=run_dir, state=state, callbacks=cb,
            after_step=after_step, stop_flag=stop_flag,
            extra_meta={"kind": "text", "model": cfg.model})
        if not finished:
            break
    if early:
        cb.call("message", f"early stop: the validation score has not improved for "
                           f"{cfg.patience} epochs (best: epoch {state.best_epoch})")
    summary = {"run_dir": run_dir, "finished": finished, "epochs_done": state.epoch,
               "best_val_score": state.best_val_score, "best_epoch": state.best_epoch,
               "best_val_metric": "chunk F1" if is_chunk_tagset(classes) else "accuracy",
               "dataset": data.source, "history": state.history, "fold": fold}
    if finished:
        summary["test"] = _test_report(cfg, run_dir, model, enc, prepare, loss_fn, classes,
                                       decoder)
    return summary


def _test_report(cfg, run_dir, model, enc, prepare, loss_fn, classes, decoder):
    best = checkpoint_path(run_dir, "best")
    if os.path.exists(best):
        model.load_state_dict(load_checkpoint(best)[0])
    metrics, out = evaluate_split(model, enc["test"], prepare, loss_fn, classes, cfg.task,
                                  decoder(model))
    report = dict(metrics, count=len(enc["test"].y), classes=list(classes))
    if cfg.task == "classify":
        report.update(loop.classification_report(out, enc["test"].y, len(classes)))
        if cfg.baseline:
            from numconv.text.baseline import bag_of_words_accuracy
            report["bag_of_words_acc"] = bag_of_words_accuracy(
                enc["train"].tokens, enc["train"].y, enc["test"].tokens, enc["test"].y,
                len(classes))
    else:
        report["tokens"] = int(sum(len(y) for y in enc["test"].y))
    atomic_write_json(os.path.join(run_dir, "report.json"), report)
    return report


def train_text(cfg, callbacks=None, resume=False, stop_flag=None, data=None):
    """Train (or resume) a text run, or all folds of a cross-validation. Returns a summary dict.
    A run that fails before it has written its configuration removes the run directory it
    created: nothing is left half-way."""
    with removed_if_unstarted(cfg.run_dir, resume, ("config.json", "cv.json")):
        return _train_text(cfg, callbacks, resume, stop_flag, data)


def _train_text(cfg, callbacks, resume, stop_flag, data):
    cb = callbacks or loop.Callbacks()
    if resume:
        run_dir = os.path.abspath(cfg.run_dir)
        if not os.path.isdir(run_dir):
            raise CheckpointError(f"run directory {run_dir} does not exist; nothing to resume")
        top = _read_json(run_dir, "cv.json" if os.path.exists(
            os.path.join(run_dir, "cv.json")) else "config.json")
        device, threads = cfg.device, cfg.threads
        cfg = config_from_doc(top)
        cfg.run_dir = run_dir
        if device is not None:   # where to run is the caller's choice; the stored one by default
            cfg.device = device
        if threads is not None:  # so is the thread count (it changes no result)
            cfg.threads = threads
    requested = cfg.device
    cfg.resolve()
    if requested == "auto":
        cb.call("message", f"--device auto: training on {cfg.device}")
    if cfg.threads:
        import numba
        numba.set_num_threads(min(cfg.threads, numba.config.NUMBA_NUM_THREADS))
    data = data or load_data(cfg)
    for line in data.notes:
        cb.call("message", line)
    if not cfg.cv:
        return _train_one(cfg, data, cfg.run_dir, None, cb, resume, stop_flag)
    run_dir = os.path.abspath(cfg.run_dir)
    if not resume:
        if os.path.exists(os.path.join(run_dir, "cv.json")):
            raise CheckpointError(f"run directory {run_dir} already holds a run; use --resume "
                                  f"{run_dir} to continue it, or choose another --run-dir")
        os.makedirs(run_dir, exist_ok=True)
        _write_json(run_dir, "cv.json", dict(asdict(cfg), kind="text", task=cfg.task,
                                             folds=[]))
    folds = []
    for k in range(cfg.cv):
        fold_dir = os.path.join(run_dir, f"fold-{k + 1}")
        if os.path.exists(os.path.join(fold_dir, "report.json")):
            with open(os.path.join(fold_dir, "report.json")) as f:
                folds.append({"fold": k + 1, "test": json.load(f), "finished": True})
            continue
        cb.call("message", f"fold {k + 1} of {cfg.cv}")
        again = os.path.exists(checkpoint_path(fold_dir))
        s = _train_one(cfg, data, fold_dir, k, cb, again, stop_flag)
        if not s["finished"]:
            return {"run_dir": run_dir, "finished": False, "cv": cfg.cv, "folds": folds}
        folds.append({"fold": k + 1, "test": s["test"], "finished": True})
    accs = np.array([f["test"]["acc"] for f in folds])
    summary = {"run_dir": run_dir, "finished": True, "cv": cfg.cv, "mean_acc": float(accs.mean()),
               "std_acc": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
               "fold_acc": accs.tolist(), "dataset": data.source}
    bow = [f["test"].get("bag_of_words_acc") for f in folds]
    if all(b is not None for b in bow):
        summary["bag_of_words_mean_acc"] = float(np.mean(bow))
    doc = _read_json(run_dir, "cv.json")
    doc.update(result=summary)
    _write_json(run_dir, "cv.json", doc)
    return summary


# ------------------------------------------------------------------------------------ prediction

def load_text_run(run_dir, which="best", device="cpu"):
    """-> (config doc, TextConfig, vocabulary, model in eval mode on `device`)."""
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"run directory {run_dir} does not exist")
    if os.path.exists(os.path.join(run_dir, "cv.json")) and \
            not os.path.exists(os.path.join(run_dir, "config.json")):
        raise CheckpointError(f"{run_dir} is a cross-validation run; predict with one of its "
                              f"folds, e.g. {os.path.join(run_dir, 'fold-1')}")
    doc = _read_json(run_dir, "config.json")
    if doc.get("kind") != "text":
        raise CheckpointError(f"{run_dir} is not a text run")
    cfg = config_from_doc(doc)
    vocab = Vocabulary.from_json(_read_json(run_dir, "vocab.json"))
    cfg.feature_vocabs = _feature_vocabs_from_doc(doc)
    cfg.transitions = _transitions_from_doc(doc)
    path = checkpoint_path(run_dir, which)
    if not os.path.exists(path):
        path = checkpoint_path(run_dir, "last")
    if not os.path.exists(path):
        raise CheckpointError(f"{run_dir} has no checkpoint yet; train it first")
    model = build_model(cfg, len(vocab), len(doc["classes"]), feature_vocabs=cfg.feature_vocabs)
    try:
        model.load_state_dict(load_checkpoint(path)[0])
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} does not match the run's model: {exc}") from None
    dev.move_model(model, resolve_run_device(device))
    model.eval()
    return doc, cfg, vocab, model


def predict_text(run_dir, inputs, device="cpu"):
    """Label sentences with a saved text run.

    Classification -> [{'input', 'tokens', 'label', 'probabilities': {class: p}}] (classes in
    the run's order); tagging -> [{'input', 'tokens', 'tags'}]. Inputs are raw strings, tokenised
    as the run's training text was (tagging: split on whitespace). A tagger trained with input
    feature columns (--features pos) takes each token as word/FEATURE, e.g. "He/PRP runs/VBZ"."""
    from numconv.ops.nn import softmax
    from numconv.text.tokenize import tokenize
    doc, cfg, vocab, model = load_text_run(run_dir, device=device)
    classes = doc["classes"]
    inputs = list(inputs)
    if not inputs:
        raise ValueError("give at least one sentence to label")
    features = None
    if cfg.task == "tag":
        tokens = [text.split() for text in inputs]
        if cfg.features:
            tokens, features = _split_feature_tokens(tokens, cfg.features)
    else:
        tokens = [tokenize(text, cfg.tokenizer, cfg.lower) for text in inputs]
    for text, toks in zip(inputs, tokens):
        if cfg.task == "tag" and not toks:
            raise ValueError(f"nothing to tag in {text!r}")
    dummy = [classes[0]] * len(tokens) if cfg.task == "classify" else \
        [[classes[0]] * len(t) for t in tokens]
    enc = encode_split(textdata.TextSplit(tokens, dummy, features), vocab, cfg, classes,
                       cfg.feature_vocabs)
    decode = tag_decoder(cfg, cfg.transitions, model)
    prepare = make_preparer(cfg, model.pad)
    out = predict_logits(model, enc, prepare)
    results = []
    if cfg.task == "classify":
        probs = softmax(np.asarray(out, np.float64))
        for text, toks, p in zip(inputs, tokens, probs):
            results.append({"input": text, "tokens": toks, "label": classes[int(p.argmax())],
                            "probabilities": {c: float(v) for c, v in zip(classes, p)}})
    else:
        for text, toks, logits in zip(inputs, tokens, out):
            results.append({"input": text, "tokens": toks,
                            "tags": [classes[int(i)] for i in decode(logits)]})
    return results


def _split_feature_tokens(sentences, names):
    """[["word/F1[/F2]", ...]] -> (words, [[[F1 ...], [F2 ...]] per sentence])."""
    words, feats = [], []
    for sent in sentences:
        w, f = [], [[] for _ in names]
        for tok in sent:
            parts = tok.rsplit("/", len(names))
            if len(parts) != len(names) + 1 or not all(parts):
                example = "/".join(["word"] + [n.upper() for n in names])
                raise ValueError(f"token {tok!r}: this tagger reads {', '.join(names)} beside each "
                                 f"word; give every token as {example} (e.g. runs/VBZ)")
            w.append(parts[0])
            for column, value in zip(f, parts[1:]):
                column.append(value)
        words.append(w)
        feats.append(f)
    return words, feats


def evaluate_text_run(run_dir, which="best", device="cpu"):
    """Re-score a saved text run on its test split (the same split it was trained with), the
    model run on `device`: the report dict of report.json (accuracy; chunk F1 for chunk tags)."""
    doc, cfg, vocab, model = load_text_run(run_dir, which, device)
    data = load_data(cfg)
    _, _, test, _ = _splits(cfg, data, doc.get("fold"))
    classes = doc["classes"]
    enc = encode_split(test, vocab, cfg, classes, cfg.feature_vocabs)
    metrics, out = evaluate_split(model, enc, make_preparer(cfg, model.pad),
                                  SoftmaxCrossEntropy(), classes, cfg.task,
                                  tag_decoder(cfg, cfg.transitions, model))
    report = dict(metrics, count=len(enc.y), classes=list(classes))
    if cfg.task == "classify":
        report.update(loop.classification_report(out, enc.y, len(classes)))
    return report
