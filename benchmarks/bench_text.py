"""Text CNN benchmarks: accuracy on MR (Kim CNN, k-fold CV) and CoNLL-2000 chunking (window
tagger, chunk F1), and training throughput against PyTorch CPU for the same networks.

    python benchmarks/bench_text.py mr [--variant rand|non-static] [--vectors glove-6b-50d]
                                       [--folds 10] [--max-folds N] [--epochs 25]
    python benchmarks/bench_text.py conll2000 [--vectors glove-6b-50d] [--epochs 10]
    python benchmarks/bench_text.py speed [--steps 5] [--nets kim,tagger]

Data come from ../shared/data (see its README). Every figure printed is what was measured in this
run; nothing is copied from elsewhere.
"""
import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(ROOT, "..", "shared", "data")


def _print_cb():
    from numconv.train.loop import Callbacks
    return Callbacks(epoch_end=lambda r: print(
        f"  epoch {r['epoch']}: train acc {r['train_acc']:.4f} val acc {r['val_acc']:.4f} "
        f"{r['items_per_s']:.0f}/s", flush=True), message=lambda m: print(" ", m, flush=True))


def _mr_config(args):
    from numconv.text.train import TextConfig
    cfg = TextConfig(model="kim", dataset=os.path.join(SHARED, "mr"), variant=args.variant,
                     vectors=args.vectors, epochs=args.epochs, cv=args.folds, seed=args.seed,
                     threads=args.threads, embed_dim=args.embed_dim, patience=args.patience,
                     vectors_scale=args.vectors_scale)
    return cfg.resolve()


def _mr_fold(args, k, quiet=False):
    """Train and test fold k (0-based) -> (k, CNN accuracy, bag-of-words accuracy, best epoch)."""
    import tempfile
    from numconv.text.train import _train_one, load_data
    if args.threads:
        import numba
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    cfg = _mr_config(args)
    with tempfile.TemporaryDirectory() as tmp:
        s = _train_one(cfg, load_data(cfg), os.path.join(tmp, f"fold-{k + 1}"), k,
                       None if quiet else _print_cb())
    return k, s["test"]["acc"], s["test"]["bag_of_words_acc"], s["best_epoch"], \
        s["best_val_score"]


def bench_mr(args):
    """k-fold cross-validation; with --jobs J, J folds train at once in separate processes (one
    thread each: on a small machine that wastes less than parallel regions that wait on each
    other). Each fold's result does not depend on how many run at once."""
    folds = list(range(min(args.max_folds or args.folds, args.folds)))
    t0 = time.perf_counter()
    results = []
    if args.jobs > 1:
        import concurrent.futures as cf
        import multiprocessing
        args.threads = 1
        with cf.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as ex:
            runs = ex.map(_mr_fold, [args] * len(folds), folds, [True] * len(folds))
            for k, acc, bow, best, val in runs:
                results.append((acc, bow, val))
                print(f"fold {k + 1}: CNN {acc:.4f}  bag-of-words {bow:.4f}  (best epoch {best}, "
                      f"validation {val:.4f})", flush=True)
    else:
        for k in folds:
            _, acc, bow, best, val = _mr_fold(args, k)
            results.append((acc, bow, val))
            print(f"fold {k + 1}: CNN {acc:.4f}  bag-of-words {bow:.4f}  (best epoch {best}, "
                  f"validation {val:.4f})", flush=True)
    a = np.array([r[0] for r in results])
    scale = f" x {args.vectors_scale:g}" if args.vectors_scale != 1 else ""
    print(f"MR Kim CNN-{args.variant}{' + ' + args.vectors + scale if args.vectors else ''}: "
          f"{len(a)} of {args.folds} folds, accuracy {100 * a.mean():.2f} +- "
          f"{100 * (a.std(ddof=1) if len(a) > 1 else 0):.2f}; validation "
          f"{100 * np.mean([r[2] for r in results]):.2f}; bag-of-words "
          f"{100 * np.mean([r[1] for r in results]):.2f}; {time.perf_counter() - t0:.0f} s")


def bench_conll(args):
    import tempfile
    from numconv.text.train import TextConfig, train_text
    cfg = TextConfig(model="window", dataset=os.path.join(SHARED, "conll2000"),
                     vectors=args.vectors, variant=args.variant, epochs=args.epochs, seed=args.seed,
                     threads=args.threads, hidden=args.hidden, lr=args.lr,
                     min_freq=args.min_freq, dropout=args.dropout, decode=args.decode,
                     schedule=args.schedule, loss=args.loss, window=args.window,
                     batch_size=args.batch_size, feature_dim=args.feature_dim,
                     activation=args.activation, patience=args.patience,
                     features=tuple(f for f in (args.features or "").split(",") if f))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg.run_dir = os.path.join(tmp, "run")
        s = train_text(cfg, callbacks=_print_cb())
    t = s["test"]
    vectors = args.vectors and (f"{args.vectors} "
                                f"({'frozen' if args.variant == 'static' else 'fine-tuned'})")
    extras = [x for x in (vectors, args.features and f"{args.features} feature",
                          args.min_freq > 1 and f"min-freq {args.min_freq}",
                          args.dropout and f"dropout {args.dropout}",
                          args.decode == "argmax" and "argmax decoding",
                          args.loss == "sll" and "sentence-level likelihood",
                          args.schedule != "constant" and f"{args.schedule} schedule") if x]
    print(f"CoNLL-2000 window tagger{''.join(' + ' + x for x in extras)}: chunk F1 "
          f"{t['f1']:.2f} (P {t['precision']:.2f} R {t['recall']:.2f}), token accuracy "
          f"{100 * t['acc']:.2f}, best epoch {s['best_epoch']}; {time.perf_counter() - t0:.0f} s")


def _torch_kim(V, D, K, widths, maps):
    import torch
    tnn = torch.nn

    class Kim(tnn.Module):
        def __init__(self):
            super().__init__()
            self.emb = tnn.Embedding(V, D)
            self.convs = tnn.ModuleList([tnn.Conv1d(D, maps, k) for k in widths])
            self.drop = tnn.Dropout(0.5)
            self.fc = tnn.Linear(maps * len(widths), K)

        def forward(self, ids, masks):
            x = self.emb(ids).transpose(1, 2)
            h = [c(x).masked_fill(~m, float("-inf")).amax(dim=2) for c, m in zip(self.convs, masks)]
            return self.fc(self.drop(torch.relu(torch.cat(h, 1))))
    return Kim()


def bench_speed(args):
    import torch
    from numconv.nn import SoftmaxCrossEntropy
    torch.set_num_threads(args.threads or os.cpu_count())
    rng = np.random.default_rng(0)
    V, widths, maps, L = 18000, (3, 4, 5), 100, 21   # MR: ~18k words, ~21 tokens a sentence
    loss_fn = SoftmaxCrossEntropy()
    if "kim" in args.nets.split(","):
        _kim_speed(args, rng, V, widths, maps, L, loss_fn)
    if "tagger" not in args.nets.split(","):
        return
    print("window tagger training (forward, backward, Adam), tokens/s, random word ids (every "
          "id equally likely: ids barely repeat within a batch):")

    def random_batch(B):
        sents = [rng.integers(1, V, rng.integers(15, 35)) for _ in range(B)]
        return sents, [np.ones(len(s), np.int64) for s in sents], None
    _tagger_speed(args, V, random_batch)
    conll = os.path.join(SHARED, "conll2000", "train.txt")
    if not os.path.exists(conll):
        print(f"(no {conll}: the tagger on real sentences is skipped)")
        return
    from numconv.text.data import read_conll
    from numconv.text.models import caps_feature
    split = read_conll(conll)
    vocab, tagset = {}, {}
    for words, tags in zip(split.tokens, split.labels):
        for w, t in zip(words, tags):
            vocab.setdefault(w.lower(), len(vocab) + 1)
            tagset.setdefault(t, len(tagset))
    print(f"window tagger, tokens/s, CoNLL-2000's training sentences ({len(vocab)} lower-cased "
          f"words, their capitalisation and chunk tags; batches drawn at random):")

    def real_batch(B):
        pick = rng.choice(len(split.tokens), B, replace=False)
        sents = [np.array([vocab[w.lower()] for w in split.tokens[i]]) for i in pick]
        caps = [np.array([caps_feature(w) for w in split.tokens[i]]) for i in pick]
        return sents, caps, [np.array([tagset[t] for t in split.labels[i]]) for i in pick]
    _tagger_speed(args, len(vocab) + 1, real_batch, len(tagset))


def _kim_speed(args, rng, V, widths, maps, L, loss_fn):
    """Kim's CNN (Adadelta) against the same network in PyTorch, 50- and 300-d, batch 50 and 256."""
    import torch
    from numconv.optim import Adadelta
    from numconv.text.models import KimCNN, window_mask
    from numconv.text.train import pad_batch
    print("Kim CNN training (forward, backward, Adadelta), sentences/s:")
    for D in (50, 300):
        for B in (50, 256):
            sents = [rng.integers(2, V, rng.integers(L - 8, L + 8)) for _ in range(B)]
            ids, lengths = pad_batch(sents, max(widths) - 1)
            y = rng.integers(0, 2, B)
            m = KimCNN(V, 2, embed_dim=D, widths=widths, maps=maps)
            opt = Adadelta(m.named_parameters())

            def ours():
                m.zero_grad()
                _, d = loss_fn(m.forward((ids, lengths)), y)
                m.backward(d)
                opt.step()
            tm = _torch_kim(V, D, 2, widths, maps)
            topt = torch.optim.Adadelta(tm.parameters(), rho=0.95, eps=1e-6)
            tids = torch.tensor(ids)
            masks = [torch.tensor(window_mask(lengths, max(widths) - 1, k, ids.shape[1] - k + 1)
                                  )[:, None, :] for k in widths]
            ty = torch.tensor(y)

            def theirs():
                topt.zero_grad()
                torch.nn.functional.cross_entropy(tm(tids, masks), ty).backward()
                topt.step()
            r = _rates((ours, theirs), B, args.steps, args.rounds)
            print(f"  D={D:3d} batch {B:3d}: numconv {r[0]:8.0f}  torch {r[1]:8.0f}  "
                  f"ratio {r[0] / r[1]:.2f}", flush=True)


def _tagger_speed(args, V, make_batch, num_tags=23):
    """The window tagger (window 5, 300 hardtanh units, Adam) against the same network in PyTorch,
    on batches of 32 (Collobert et al.'s recipe), 50 and 256 sentences from make_batch(B)."""
    import torch
    from numconv.nn import SoftmaxCrossEntropy
    from numconv.optim import Adam
    from numconv.text.models import WindowTagger
    from numconv.text.train import pad_batch, tagging_loss
    rng = np.random.default_rng(1)
    loss_fn = SoftmaxCrossEntropy()
    for D in (50, 300):
        for B in (32, 50, 256):
            sents, caps, tags = make_batch(B)
            m = WindowTagger(V, num_tags, embed_dim=D, window=5, hidden=300)
            ids, lengths = pad_batch(sents, m.pad)
            caps, _ = pad_batch(caps, m.pad)
            T = ids.shape[1] - 2 * m.pad
            if tags is None:
                tags = rng.integers(0, num_tags, (B, T))
            else:
                tags = np.stack([np.pad(t, (0, T - len(t))) for t in tags])
            mask = np.arange(T)[None, :] < lengths[:, None]
            opt = Adam(m.named_parameters())

            def ours():
                m.zero_grad()
                _, d, _, _ = tagging_loss(loss_fn, m.forward((ids, caps, lengths)), tags, mask)
                m.backward(d)
                opt.step()
            tnn = torch.nn
            temb, tcap = tnn.Embedding(V, D), tnn.Embedding(6, 5)
            tnet = tnn.Sequential(tnn.Conv1d(D + 5, 300, 5), tnn.Hardtanh(),
                                  tnn.Conv1d(300, num_tags, 1))
            params = list(temb.parameters()) + list(tcap.parameters()) + list(tnet.parameters())
            topt = torch.optim.Adam(params)
            tids, tcaps = torch.tensor(ids), torch.tensor(caps)
            ttags, tmask = torch.tensor(tags), torch.tensor(mask)

            def theirs():
                topt.zero_grad()
                x = torch.cat([temb(tids), tcap(tcaps)], 2).transpose(1, 2)
                logits = tnet(x).transpose(1, 2)[tmask]
                torch.nn.functional.cross_entropy(logits, ttags[tmask]).backward()
                topt.step()
            n = int(mask.sum())
            distinct = len(np.unique(np.concatenate(sents))) / n
            r = _rates((ours, theirs), n, args.steps, args.rounds)
            print(f"  D={D:3d} batch {B:3d} ({100 * distinct:.0f} % of words distinct): numconv "
                  f"{r[0]:8.0f}  torch {r[1]:8.0f}  ratio {r[0] / r[1]:.2f}", flush=True)


def _rates(fns, items, steps, rounds):
    """The best rate of each function over `rounds` alternating blocks of `steps` steps, with a
    pause before each block so that the other library's idle-spinning threads have stopped."""
    best = [0.0] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            time.sleep(0.3)
            best[i] = max(best[i], _rate(fn, items, steps))
    return best


def _rate(fn, items, steps):
    fn()   # warm-up (and JIT compilation)
    best = 0.0
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        best = max(best, items / (time.perf_counter() - t))
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("which", choices=["mr", "conll2000", "speed"])
    p.add_argument("--variant", default="rand")
    p.add_argument("--vectors")
    p.add_argument("--vectors-scale", type=float, default=1.0,
                   help="Multiply the pretrained vectors by this (TextConfig.vectors_scale).")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--max-folds", type=int, help="Run only the first N folds (time budget).")
    p.add_argument("--epochs", type=int)
    p.add_argument("--patience", type=int)
    p.add_argument("--embed-dim", type=int)
    p.add_argument("--hidden", type=int, default=300)
    p.add_argument("--window", type=int, default=5, help="conll2000: the tagger's window.")
    p.add_argument("--batch-size", type=int, help="Sentences per batch (default: the recipe's).")
    p.add_argument("--feature-dim", type=int, default=10,
                   help="conll2000: size of each --features column's vectors.")
    p.add_argument("--activation", default="hardtanh", choices=["hardtanh", "relu"])
    p.add_argument("--lr", type=float)
    p.add_argument("--decode", default="viterbi", choices=["viterbi", "argmax"])
    p.add_argument("--loss", default="wll", choices=["wll", "sll"],
                   help="conll2000: word-level or sentence-level likelihood.")
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine", "plateau"])
    p.add_argument("--dropout", type=float, help="Dropout rate (default: the recipe's).")
    p.add_argument("--features", help="conll2000: input columns beside the words, e.g. pos.")
    p.add_argument("--min-freq", type=int, default=1,
                   help="Words seen fewer times in training share the unknown-word row.")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--nets", default="kim,tagger",
                   help="speed: the networks to time, comma-separated (kim, tagger).")
    p.add_argument("--rounds", type=int, default=3,
                   help="speed: alternating timed blocks per library (the best block counts).")
    p.add_argument("--jobs", type=int, default=1,
                   help="mr: folds trained at once, in separate single-threaded processes.")
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    {"mr": bench_mr, "conll2000": bench_conll, "speed": bench_speed}[args.which](args)


if __name__ == "__main__":
    main()
