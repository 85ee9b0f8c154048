"""`numconv train-text` end to end on tiny data: the default run beats bag-of-words, exact resume,
cross-validation, the window tagger on a CoNLL file, predict_text, and one-line CLI errors."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from numconv.text import is_text_run, predict_text
from numconv.text.train import TextConfig, train_text
from numconv.train import loop
from numconv.train.checkpoint import checkpoint_path, load_checkpoint
from run_helpers import StopAfter, strip_timings

SMALL = ["--maps", "16", "--embed-dim", "24", "--threads", "2"]
QUICK = dict(maps=16, embed_dim=24, epochs=3, limit=600, seed=1, baseline=False)


def test_default_cli_run_beats_bag_of_words_and_predicts(tmp_path):
    # The default recipe (300-d, Adadelta) takes a few minutes; a small net with Adam shows the
    # same thing in seconds: word order lifts the CNN far above the bag of words.
    run = str(tmp_path / "run")
    result = CliRunner().invoke(main, ["train-text", "--epochs", "5", "--limit", "800",
                                       "--run-dir", run, "--optimizer", "adam", "--lr", "0.01",
                                       "--dropout", "0.2"] + SMALL)
    assert result.exit_code == 0, result.output
    report = json.loads(open(os.path.join(run, "report.json")).read())
    assert "bag-of-words baseline" in result.output and "CNN accuracy" in result.output
    assert report["bag_of_words_acc"] < 0.6 < 0.85 < report["acc"]
    assert is_text_run(run)
    out = predict_text(run, ["the plot was not good", "the plot was good"])
    assert [r["label"] for r in out] == ["negative", "positive"]
    assert sum(out[0]["probabilities"].values()) == pytest.approx(1)
    for name in ("config.json", "vocab.json", "metrics.jsonl"):
        assert os.path.exists(os.path.join(run, name))


def test_same_seed_same_metrics_and_exact_resume(tmp_path):
    full = train_text(TextConfig(run_dir=str(tmp_path / "full"), **QUICK))
    flag = StopAfter(14)   # 600 - 10% val = 540 sentences / 50 = 11 batches an epoch
    part = train_text(TextConfig(run_dir=str(tmp_path / "part"), **QUICK),
                      callbacks=loop.Callbacks(batch_end=flag.tick), stop_flag=flag)
    assert not part["finished"] and part["epochs_done"] == 1
    meta = load_checkpoint(checkpoint_path(str(tmp_path / "part")))[3]
    assert (meta["epoch"], meta["batch"]) == (1, 3)
    resumed = train_text(TextConfig(run_dir=str(tmp_path / "part")), resume=True)
    assert resumed["finished"]
    assert strip_timings(resumed["history"]) == strip_timings(full["history"])
    assert resumed["test"]["confusion_matrix"] == full["test"]["confusion_matrix"]


def test_cross_validation_reports_mean_and_spread(tmp_path):
    s = train_text(TextConfig(run_dir=str(tmp_path / "cv"), cv=3, **dict(QUICK, epochs=1,
                                                                          limit=300)))
    assert s["finished"] and len(s["fold_acc"]) == 3
    assert s["mean_acc"] == pytest.approx(np.mean(s["fold_acc"]))
    assert s["std_acc"] >= 0
    doc = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert doc["result"]["cv"] == 3
    sizes = [json.loads((tmp_path / "cv" / f"fold-{k}" / "config.json").read_text())["splits"]
             ["test"] for k in (1, 2, 3)]
    assert sum(sizes) == 300 + 600     # the folds partition the data (train and test splits)


def _tiny_conll(folder):
    rng = np.random.default_rng(0)
    nouns, verbs = ["dog", "cat", "Paris", "IBM", "bank"], ["runs", "sees", "likes"]
    for name, n in (("train", 160), ("test", 40)):
        lines = []
        for _ in range(n):
            toks = [("the", "DT", "B-NP"), (rng.choice(nouns), "NN", "I-NP"),
                    (rng.choice(verbs), "VBZ", "B-VP"), (rng.choice(nouns), "NN", "B-NP"),
                    (".", ".", "O")]
            lines += [" ".join(t) for t in toks] + [""]
        (folder / f"{name}.txt").write_text("\n".join(lines))


def test_window_tagger_on_conll_files(tmp_path):
    _tiny_conll(tmp_path)
    run = str(tmp_path / "tag")
    result = CliRunner().invoke(main, ["train-text", "--model", "window", "--dataset",
                                       str(tmp_path), "--epochs", "4", "--hidden", "32",
                                       "--lr", "0.01", "--run-dir", run, "--threads", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(open(os.path.join(run, "report.json")).read())
    assert report["acc"] > 0.95 and report["f1"] > 90
    assert "best validation chunk F1" in " ".join(result.output.split())   # (lines wrap)
    # chunking selects its best epoch by validation chunk F1, logged beside the accuracy
    log = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert all(r["val_score"] == r["val_f1"] / 100 for r in log)
    best = max(range(len(log)), key=lambda i: (log[i]["val_score"], -i)) + 1
    assert load_checkpoint(checkpoint_path(run, "best"))[3]["best_epoch"] == best
    out = predict_text(run, ["the cat sees IBM ."])
    assert out[0]["tags"] == ["B-NP", "I-NP", "B-VP", "B-NP", "O"]


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood film,pos\nbad film,neg\n" * 10)
    (tmp_path / "test.csv").write_text("text,label\nodd film,meh\n")
    vec = tmp_path / "v.txt"
    vec.write_text("good 1 2\nfilm 1\n")
    bad_conll = tmp_path / "c.txt"
    bad_conll.write_text("a DT B-NP\nb NN\n")
    runner = CliRunner()
    for args, needle in [
        (["--dataset", str(tmp_path / "train.csv"), "--text-column", "body"], "no column 'body'"),
        (["--dataset", str(tmp_path)], "label 'meh' does not occur in the training split"),
        (["--variant", "static"], "needs --vectors"),
        (["--dataset", str(tmp_path), "--vectors", str(vec), "--variant", "static"],
         "line 2 has 1 values"),
        (["--model", "window", "--dataset", str(bad_conll)], "line 2: expected 3 columns"),
        (["--dataset", str(tmp_path / "nowhere.csv")], "neither a file"),
        (["--epochs", "0"], "--epochs must be >= 1"),
    ]:
        result = runner.invoke(main, ["train-text", "--run-dir", str(tmp_path / "r")] + args)
        assert result.exit_code != 0, args
        assert needle in result.output, (args, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    with pytest.raises(Exception, match="does not exist"):
        predict_text(str(tmp_path / "none"), ["x"])


def test_evaluate_text_run_reproduces_the_report(tmp_path):
    from numconv.text.train import evaluate_text_run
    s = train_text(TextConfig(run_dir=str(tmp_path / "ev"), **dict(QUICK, epochs=1, limit=200)))
    again = evaluate_text_run(str(tmp_path / "ev"))
    assert again["acc"] == s["test"]["acc"] and again["count"] == 600


def _ambiguous_conll(folder):
    """Words that are nouns or verbs by context only the POS column gives: 'walks' after 'the'
    and before a verb is a noun (B-NP) in half the sentences, a verb (B-VP) in the others, with
    the same neighbours; only the POS tag tells them apart."""
    rng = np.random.default_rng(3)
    for name, n in (("train", 200), ("test", 60)):
        lines = []
        for _ in range(n):
            noun = rng.random() < 0.5
            toks = [("we", "PRP", "B-NP"), ("walks", "NNS" if noun else "VBZ",
                                             "B-NP" if noun else "B-VP"), (".", ".", "O")]
            lines += [" ".join(t) for t in toks] + [""]
        (folder / f"{name}.txt").write_text("\n".join(lines))


def test_window_tagger_reads_the_pos_column_as_an_input_feature(tmp_path):
    from numconv.text.train import evaluate_text_run
    _ambiguous_conll(tmp_path)
    common = ["train-text", "--model", "window", "--dataset", str(tmp_path), "--epochs", "4",
              "--hidden", "16", "--lr", "0.02", "--threads", "2", "--no-caps"]
    runs = {}
    for label, extra in (("words", []), ("pos", ["--features", "pos"])):
        run = str(tmp_path / label)
        result = CliRunner().invoke(main, common + ["--run-dir", run] + extra)
        assert result.exit_code == 0, result.output
        runs[label] = json.loads(open(os.path.join(run, "report.json")).read())
    assert runs["pos"]["acc"] == 1.0           # the feature decides the tag
    assert runs["words"]["acc"] < 0.9          # words alone cannot (half the 'walks' are wrong)
    run = str(tmp_path / "pos")
    assert evaluate_text_run(run)["acc"] == runs["pos"]["acc"]
    doc = json.loads(open(os.path.join(run, "config.json")).read())
    assert doc["features"] == ["pos"] and "VBZ" in doc["feature_vocabs"]["pos"]
    K = len(doc["classes"])
    assert doc["decode"] == "viterbi" and np.array(doc["transitions"]).shape == (K + 1, K)
    out = predict_text(run, ["we/PRP walks/VBZ ./.", "we/PRP walks/NNS ./."])
    assert [o["tags"][1] for o in out] == ["B-VP", "B-NP"]
    assert out[0]["tokens"] == ["we", "walks", "."]
    with pytest.raises(ValueError, match=r"give every token as word/POS"):
        predict_text(run, ["we walks ."])


def test_feature_column_errors_are_one_line(tmp_path):
    _ambiguous_conll(tmp_path)
    runner = CliRunner()
    for args, needle in [
        (["--features", "pos"], "needs --model window"),
        (["--model", "window", "--dataset", str(tmp_path), "--features", "lemma"],
         "--features 'lemma' is not a CoNLL column"),
        (["--model", "window", "--dataset", str(tmp_path), "--features", "chunk"],
         "feature column 2 is not a column besides the word"),
        (["--model", "window", "--dataset", str(tmp_path), "--tags", "pos", "--features", "pos"],
         "is the column being predicted"),
    ]:
        result = runner.invoke(main, ["train-text", "--run-dir", str(tmp_path / "r")] + args)
        assert result.exit_code != 0, args
        assert needle in result.output, (args, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_window_tagger_hidden_dropout_is_off_by_default_and_inactive_in_eval():
    from numconv.text.models import WindowTagger
    from numconv.train.loop import set_dropout_step
    plain = WindowTagger(30, 4, embed_dim=6, hidden=8, seed=2)
    dropped = WindowTagger(30, 4, embed_dim=6, hidden=8, seed=2, dropout=0.5)
    assert set(plain.state_dict()) == set(dropped.state_dict())
    assert TextConfig(model="window").resolve().dropout == 0.0
    assert TextConfig(model="kim").resolve().dropout == 0.5
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 30, (3, 11))
    batch = (ids, np.ones_like(ids), np.array([7, 7, 7]))
    a, b = plain.forward(batch), dropped.forward(batch)
    assert not np.allclose(a, b)                             # training: units dropped
    set_dropout_step(dropped, 1)
    assert not np.array_equal(b, dropped.forward(batch))     # a new mask each step
    np.testing.assert_array_equal(plain.eval().forward(batch), dropped.eval().forward(batch))


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_text_schedules_change_the_rate_and_resume_exactly(tmp_path, schedule):
    cfg = dict(QUICK, epochs=3, limit=300, schedule=schedule, optimizer="adam", lr=0.01,
               patience=3)
    whole = train_text(TextConfig(run_dir=str(tmp_path / "whole"), **cfg))
    lines = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    rates = [x["lr"] for x in lines]
    if schedule == "cosine":   # the rate of each epoch's last batch, on the way to 0
        assert 0.01 > rates[0] > rates[1] > rates[2] >= 0
    else:   # halved after each epoch whose validation accuracy is not a new best
        accs = [x["val_acc"] for x in lines]
        for e in range(len(rates) - 1):
            new_best = e == 0 or accs[e] > max(accs[:e])
            assert rates[e + 1] == (rates[e] if new_best else rates[e] / 2)
    flag = StopAfter(8)    # 300 - 10% val = 270 sentences / 50 = 6 batches an epoch
    stopped = train_text(TextConfig(run_dir=str(tmp_path / "cut"), **cfg),
                         callbacks=loop.Callbacks(batch_end=flag.tick), stop_flag=flag)
    assert not stopped["finished"]
    resumed = train_text(TextConfig(run_dir=str(tmp_path / "cut")), resume=True)
    assert strip_timings(resumed["history"]) == strip_timings(whole["history"])


def test_unknown_text_schedule_is_refused():
    with pytest.raises(ValueError, match="--schedule 'step' is unknown"):
        TextConfig(schedule="step").resolve()


def test_window_tagger_static_variant_keeps_the_pretrained_vectors(tmp_path):
    from numconv.text.train import load_text_run
    _tiny_conll(tmp_path)
    rng = np.random.default_rng(4)
    words = ["the", "dog", "cat", "paris", "ibm", "bank", "runs", "sees", "likes", "."]
    vec = tmp_path / "vectors.txt"
    vec.write_text("".join(f"{w} " + " ".join(f"{v:.4f}" for v in rng.standard_normal(6)) + "\n"
                           for w in words))
    run = str(tmp_path / "static")
    result = CliRunner().invoke(main, ["train-text", "--model", "window", "--dataset",
                                       str(tmp_path), "--epochs", "2", "--hidden", "16",
                                       "--vectors", str(vec), "--variant", "static",
                                       "--run-dir", run, "--threads", "2"])
    assert result.exit_code == 0, result.output
    _, _, vocab, model = load_text_run(run)
    table = {line.split()[0]: np.array(line.split()[1:], np.float32)
             for line in vec.read_text().splitlines()}
    weight = model.embedding.weight
    for w in ("dog", "sees", "."):
        np.testing.assert_array_equal(weight[vocab.index[w]], table[w])   # never trained
    assert "embedding.weight" not in dict((n, p) for n, p, _ in model.named_parameters())
    for args, needle in [(["--variant", "multichannel", "--vectors", str(vec)],
                          "is a Kim CNN variant"),
                         (["--variant", "static"], "--variant static needs --vectors")]:
        result = CliRunner().invoke(main, ["train-text", "--model", "window", "--dataset",
                                           str(tmp_path), "--run-dir", str(tmp_path / "x")] + args)
        assert result.exit_code != 0 and needle in result.output, result.output


def test_vectors_scale_multiplies_the_pretrained_vectors_and_the_unknown_words_spread(tmp_path):
    from numconv.text.train import load_text_run
    _tiny_conll(tmp_path)
    rng = np.random.default_rng(5)
    words = ["the", "dog", "cat", "paris", "runs", "sees", "likes", "."]    # no ibm, bank
    vec = tmp_path / "vectors.txt"
    vec.write_text("".join(f"{w} " + " ".join(f"{v:.4f}" for v in 3 * rng.standard_normal(6))
                           + "\n" for w in words))
    table = {line.split()[0]: np.array(line.split()[1:], np.float32)
             for line in vec.read_text().splitlines()}
    run = str(tmp_path / "scaled")
    result = CliRunner().invoke(main, ["train-text", "--model", "window", "--dataset",
                                       str(tmp_path), "--epochs", "1", "--hidden", "8",
                                       "--vectors", str(vec), "--variant", "static",
                                       "--vectors-scale", "0.5", "--run-dir", run])
    assert result.exit_code == 0, result.output
    doc, _, vocab, model = load_text_run(run)
    assert doc["vectors_scale"] == 0.5
    weight = model.embedding.weight
    for w in ("dog", "sees", "."):
        np.testing.assert_array_equal(weight[vocab.index[w]], 0.5 * table[w])
    spread = np.sqrt(3 * np.var(np.stack(list(table.values())))) * 0.5
    unknown = [i for i, w in enumerate(vocab.words) if i > 1 and w not in table]
    assert unknown and np.abs(weight[unknown]).max() <= spread * 1.01
    for args, needle in [(["--vectors-scale", "0"], "--vectors-scale must be a number > 0"),
                         (["--vectors-scale", "2"], "give --vectors too")]:
        result = CliRunner().invoke(main, ["train-text", "--model", "window", "--dataset",
                                           str(tmp_path), "--run-dir", str(tmp_path / "x")] + args)
        assert result.exit_code != 0 and needle in result.output, result.output
