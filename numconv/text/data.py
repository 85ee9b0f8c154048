"""Text datasets -> tokenised sentences and string labels.

Sources (`load_text_data(source, ...)`):
- 'negation' (the default): the embedded generated dataset data/negation_sentiment.tsv, where word
  order decides the label (see data/make_negation_sentiment.py).
- Hugging Face hub names (HUB_TEXT, HUB_TAGGING) when the hub is reachable or the dataset cached;
  offline with nothing cached this fails at once (numconv.data._hub.HubUnavailable).
- a .csv/.tsv/.jsonl/.parquet file, or a folder holding train.* and test.* (and optionally dev.* or
  validation.*), with chosen text and label columns;
- a folder of one file per class, "<stem>.<class>" (MR's rt-polarity.pos / rt-polarity.neg),
  one sentence per line, decoded with `encoding` (MR is Latin-1);
- CoNLL column files for tagging: one token per line, columns separated by whitespace, a blank line
  between sentences; a file, or a folder with train.txt and test.txt (and optionally dev.txt).

Labels stay strings here (integers become their decimal text); `numconv.text.train` turns them into
class indices, and a test label the training split never had is an error there.
"""
import csv
import io
import json
import os
from dataclasses import dataclass, field

from numconv.text.tokenize import tokenize

DEFAULT_DATASET = "negation"
HUB_TEXT = {   # name -> (repo, text column, label column)
    "rotten_tomatoes": ("cornell-movie-review-data/rotten_tomatoes", "text", "label"),
    "sst2": ("stanfordnlp/sst2", "sentence", "label"),
    "trec": ("CogComp/trec", "text", "coarse_label"),
    "imdb": ("stanfordnlp/imdb", "text", "label"),
    "ag_news": ("fancyzhx/ag_news", "text", "label"),
}
HUB_TAGGING = {   # name -> (repo, default tag column)
    "conll2000": ("eriktks/conll2000", "chunk_tags"),
    "conll2003": ("eriktks/conll2003", "ner_tags"),
}
TAG_COLUMNS = {"pos": (1, "pos_tags"), "chunk": (2, "chunk_tags"), "ner": (3, "ner_tags")}
TABLE_EXTS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
SKIP_IN_CLASS_FOLDERS = ("all", "txt", "md", "orig", "json", "csv", "tsv")


@dataclass
class TextSplit:
    tokens: list            # [[str]] sentences
    labels: list            # classification: [str]; tagging: [[str]] one tag per token
    features: list = None   # tagging with input feature columns: [[[str] per column] per sentence]

    def __len__(self):
        return len(self.tokens)

    def subset(self, idx):
        return TextSplit([self.tokens[i] for i in idx], [self.labels[i] for i in idx],
                         None if self.features is None else [self.features[i] for i in idx])


@dataclass
class TextData:
    name: str
    source: str
    task: str                     # 'classify' or 'tag'
    train: TextSplit
    val: TextSplit = None         # None: carved from train by the trainer
    test: TextSplit = None        # None: carved from train, or cross-validation
    notes: list = field(default_factory=list)


def _embedded_path():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__)))), "data", "negation_sentiment.tsv")


# ------------------------------------------------------------------------------------ raw reading

def read_text(path, encoding="utf-8"):
    """The file's text; empty files and undecodable bytes are one-line errors."""
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise ValueError(f"file {path} is empty")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ValueError(f"file {path} is not valid {encoding} (byte 0x{raw[exc.start]:02x} on "
                         f"line {line}); pass the right --encoding, e.g. --encoding latin-1") \
            from None
    except LookupError:
        raise ValueError(f"encoding {encoding!r} is unknown; use e.g. utf-8 or latin-1") from None


def _read_table(path, encoding):
    """-> (column names, list of row dicts)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        import pyarrow.parquet as pq
        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise ValueError(f"file {path} is not a readable parquet file ({exc})") from None
        if table.num_rows == 0:
            raise ValueError(f"file {path} is empty")
        return table.column_names, table.to_pylist()
    text = read_text(path, encoding)
    if ext in (".jsonl", ".json"):
        rows = []
        for lineno, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"file {path} line {lineno} is not JSON: {exc.msg}") from None
        columns = list(rows[0]) if rows else []
        return columns, rows
    reader = csv.DictReader(io.StringIO(text), delimiter="\t" if ext == ".tsv" else ",")
    rows = list(reader)
    if not rows:
        raise ValueError(f"file {path} has a header but no rows")
    return list(reader.fieldnames or []), rows


def _pick_column(path, columns, wanted, candidates, what):
    if wanted:
        if wanted not in columns:
            raise ValueError(f"file {path} has no column {wanted!r} (columns: "
                             f"{', '.join(map(str, columns))}); choose the {what} column with "
                             f"--{what}-column")
        return wanted
    for c in candidates:
        if c in columns:
            return c
    raise ValueError(f"file {path} has none of the columns {', '.join(candidates)} (columns: "
                     f"{', '.join(map(str, columns))}); choose the {what} column with "
                     f"--{what}-column")


def _label_text(v):
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip()


def read_table_split(path, text_column=None, label_column=None, encoding="utf-8",
                     tokenizer="kim", lower=True):
    columns, rows = _read_table(path, encoding)
    tcol = _pick_column(path, columns, text_column, ("text", "sentence", "review", "content"),
                        "text")
    lcol = _pick_column(path, columns, label_column, ("label", "labels", "class", "category"),
                        "label")
    tokens, labels = [], []
    for i, row in enumerate(rows):
        t, y = row.get(tcol), row.get(lcol)
        if t is None or y is None or _label_text(y) == "":
            raise ValueError(f"file {path} row {i + 1} has no {'text' if t is None else 'label'}")
        tokens.append(tokenize(str(t), tokenizer, lower))
        labels.append(_label_text(y))
    return TextSplit(tokens, labels)


def read_class_files(folder, encoding="latin-1", tokenizer="kim", lower=True):
    """One file per class, '<stem>.<class>', one sentence per line. -> TextSplit."""
    groups = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if name.startswith(".") or name.lower().startswith("readme") or not ext or \
                ext[1:].lower() in SKIP_IN_CLASS_FOLDERS:
            continue
        groups.setdefault(stem, []).append(name)
    stems = [s for s, files in groups.items() if len(files) >= 2]
    if not stems:
        raise ValueError(f"folder {folder} holds no one-file-per-class data ('<stem>.<class>' "
                         f"files such as rt-polarity.pos and rt-polarity.neg), no train/test "
                         f"files and no CoNLL files")
    tokens, labels = [], []
    for name in groups[stems[0]]:
        path = os.path.join(folder, name)
        label = os.path.splitext(name)[1][1:]
        for line in read_text(path, encoding).split("\n"):
            if line.strip():
                tokens.append(tokenize(line, tokenizer, lower))
                labels.append(label)
    return TextSplit(tokens, labels)


def read_conll(path, tag_column=None, encoding="utf-8", lower=False, feature_columns=()):
    """CoNLL column file -> TextSplit of (words, tags). `tag_column` is the 0-based column of the
    tags (default: the last); the first column is the word. `feature_columns`: 0-based columns
    read as input features (e.g. 1, the POS tags of CoNLL-2000), kept in `features`."""
    text = read_text(path, encoding)
    tokens, labels, features = [], [], []
    words, tags, feats, ncols = [], [], [[] for _ in feature_columns], None
    for lineno, line in enumerate(text.split("\n"), 1):
        parts = line.split()
        if not parts:
            if words:
                tokens.append(words)
                labels.append(tags)
                features.append(feats)
            words, tags, feats = [], [], [[] for _ in feature_columns]
            continue
        if parts[0] == "-DOCSTART-":
            continue
        if ncols is None:
            ncols = len(parts)
            col = ncols - 1 if tag_column is None else tag_column
            if ncols < 2 or not 0 < col < ncols:
                raise ValueError(f"file {path} line {lineno}: a CoNLL line needs a word and a "
                                 f"tag column {col}, got {len(parts)} column(s): {line.strip()!r}")
            for c in feature_columns:
                if not 0 < c < ncols or c == col:
                    raise ValueError(f"file {path} line {lineno}: feature column {c} is not a "
                                     f"column besides the word (0) and the tags ({col}) of its "
                                     f"{ncols}: {line.strip()!r}")
        if len(parts) != ncols:
            raise ValueError(f"file {path} line {lineno}: expected {ncols} columns like the "
                             f"lines before it, got {len(parts)}: {line.strip()!r}")
        words.append(parts[0].lower() if lower else parts[0])
        tags.append(parts[col])
        for f, c in zip(feats, feature_columns):
            f.append(parts[c])
    if words:
        tokens.append(words)
        labels.append(tags)
        features.append(feats)
    if not tokens:
        raise ValueError(f"file {path} holds no sentences")
    return TextSplit(tokens, labels, features if feature_columns else None)


# --------------------------------------------------------------------------------------- sources

def _split_files(folder, exts):
    found = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in exts:
            key = {"validation": "val", "dev": "val", "valid": "val"}.get(stem.lower(),
                                                                          stem.lower())
            if key in ("train", "val", "test"):
                found.setdefault(key, os.path.join(folder, name))
    return found


def _from_hub(name, task, tags, text_column, label_column, tokenizer, lower, features=()):
    from numconv.data._hub import HubSpec, load_hub_dataset
    if task == "tag":
        repo, default_col = HUB_TAGGING[name]
        col = TAG_COLUMNS[tags][1] if tags else default_col
    else:
        repo, tcol, lcol = HUB_TEXT[name]
        tcol, lcol = text_column or tcol, label_column or lcol
    ds = load_hub_dataset(name, HubSpec(repo))
    splits = {}
    for split_name, part in ds.items():
        key = {"validation": "val", "dev": "val"}.get(split_name, split_name)
        if key not in ("train", "val", "test"):
            continue
        if task == "tag":
            names = part.features[col].feature.names
            fcols = [TAG_COLUMNS[f][1] for f in features]
            for c in fcols:
                if c not in part.column_names:
                    raise ValueError(f"hub dataset {repo} has no column {c!r} for --features "
                                     f"(columns: {', '.join(part.column_names)})")
            fnames = [part.features[c].feature.names for c in fcols]
            feats = None
            if fcols:
                feats = [[[fn[t] for t in seq] for fn, seq in zip(fnames, row)]
                         for row in zip(*(part[c] for c in fcols))]
            splits[key] = TextSplit([list(s) for s in part["tokens"]],
                                    [[names[t] for t in s] for s in part[col]], feats)
        else:
            for c in (tcol, lcol):
                if c not in part.column_names:
                    raise ValueError(f"hub dataset {repo} has no column {c!r} (columns: "
                                     f"{', '.join(part.column_names)})")
            feat = part.features[lcol]
            names = getattr(feat, "names", None)
            ys = part[lcol]
            if any(isinstance(y, int) and y < 0 for y in ys):   # unlabelled test split (sst2)
                continue
            splits[key] = TextSplit([tokenize(t, tokenizer, lower) for t in part[tcol]],
                                    [names[y] if names else _label_text(y) for y in ys])
    if "test" not in splits and "val" in splits:
        splits["test"] = splits.pop("val")
    return TextData(name, f"hub:{repo}", task, splits["train"], splits.get("val"),
                    splits.get("test"))


def load_text_data(source=DEFAULT_DATASET, task="classify", *, text_column=None,
                   label_column=None, encoding=None, tokenizer="kim", lower=True, tags=None,
                   features=()):
    """-> TextData. `task` 'classify' or 'tag'; `tags` ('pos', 'chunk', 'ner') picks the CoNLL
    column for tagging (default: the last column, or the hub dataset's chunk/NER tags);
    `features` names further CoNLL columns read as tagging inputs (e.g. ('pos',))."""
    if task not in ("classify", "tag"):
        raise ValueError(f"task {task!r} is unknown; use classify or tag")
    if tags is not None and tags not in TAG_COLUMNS:
        raise ValueError(f"--tags {tags!r} is unknown; use one of {', '.join(TAG_COLUMNS)}")
    features = tuple(features or ())
    for f in features:
        if f not in TAG_COLUMNS:
            raise ValueError(f"--features {f!r} is unknown; use one of {', '.join(TAG_COLUMNS)}")
    if features and task != "tag":
        raise ValueError("--features (CoNLL input columns) applies to the window tagger only")
    if tags is not None and tags in features:
        raise ValueError(f"--features {tags} is the column being predicted (--tags {tags}); "
                         f"an input feature must be another column")
    tag_col = TAG_COLUMNS[tags][0] if tags else None
    feat_cols = tuple(TAG_COLUMNS[f][0] for f in features)
    if source == DEFAULT_DATASET and task == "classify":
        path = _embedded_path()
        if not os.path.exists(path):
            raise FileNotFoundError(f"the embedded dataset {path} is missing; regenerate it with "
                                    f"python data/make_negation_sentiment.py")
        columns, rows = _read_table(path, "utf-8")
        splits = {"train": TextSplit([], []), "test": TextSplit([], [])}
        for row in rows:
            splits[row["split"]].tokens.append(tokenize(row["text"], tokenizer, lower))
            splits[row["split"]].labels.append(row["label"])
        return TextData(DEFAULT_DATASET, "embedded:data/negation_sentiment.tsv", task,
                        splits["train"], None, splits["test"])
    if os.path.isdir(source):
        if task == "tag":
            files = _split_files(source, (".txt", ".conll", ".iob", ".bio", ""))
            if "train" not in files:
                raise ValueError(f"folder {source} has no train.txt CoNLL file (found: "
                                 f"{', '.join(sorted(os.listdir(source))) or 'nothing'})")
            parts = {k: read_conll(p, tag_col, encoding or "utf-8", feature_columns=feat_cols)
                     for k, p in files.items()}
        else:
            files = _split_files(source, TABLE_EXTS)
            if "train" in files:
                parts = {k: read_table_split(p, text_column, label_column, encoding or "utf-8",
                                             tokenizer, lower) for k, p in files.items()}
            else:
                parts = {"train": read_class_files(source, encoding or "latin-1", tokenizer,
                                                   lower)}
        return TextData(os.path.basename(os.path.normpath(source)), source, task, parts["train"],
                        parts.get("val"), parts.get("test"))
    if os.path.isfile(source):
        if task == "tag":
            split = read_conll(source, tag_col, encoding or "utf-8", feature_columns=feat_cols)
        elif os.path.splitext(source)[1].lower() in TABLE_EXTS:
            split = read_table_split(source, text_column, label_column, encoding or "utf-8",
                                     tokenizer, lower)
        else:
            raise ValueError(f"file {source} is not a .csv/.tsv/.jsonl/.parquet table; for one "
                             f"file per class give their folder, for CoNLL use --model window")
        return TextData(os.path.basename(source), source, task, split)
    hub = HUB_TAGGING if task == "tag" else HUB_TEXT
    if source in hub:
        return _from_hub(source, task, tags, text_column, label_column, tokenizer, lower,
                         features)
    known = ", ".join(([DEFAULT_DATASET] if task == "classify" else []) + sorted(hub))
    raise FileNotFoundError(f"dataset {source!r} is neither a file, a folder nor a known name "
                            f"({known})")
