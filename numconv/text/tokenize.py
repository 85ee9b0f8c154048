"""Tokenisation and vocabularies.

- 'kim': Kim (2014)'s `clean_str` (from his CNN_sentence code): keep letters, digits and a few
  punctuation marks, split off clitics ('s 've n't 're 'd 'll) and punctuation, collapse spaces.
- 'whitespace': split on whitespace only (for pre-tokenised text such as MR or CoNLL).
Lower-casing is a separate switch (on by default, as in Kim's code for every dataset but TREC).

A Vocabulary maps words to rows of the embedding table: row 0 is padding, row 1 unknown words,
then the words seen at least `min_freq` times in the training text, most frequent first (ties
alphabetical, so the table is a pure function of the data).
"""
import re
from collections import Counter

TOKENIZERS = ("kim", "whitespace")
PAD, UNK = "<pad>", "<unk>"

_KIM_RULES = [
    (re.compile(r"[^A-Za-z0-9(),!?\'\`]"), " "),
    (re.compile(r"\'s"), " 's"), (re.compile(r"\'ve"), " 've"), (re.compile(r"n\'t"), " n't"),
    (re.compile(r"\'re"), " 're"), (re.compile(r"\'d"), " 'd"), (re.compile(r"\'ll"), " 'll"),
    (re.compile(r","), " , "), (re.compile(r"!"), " ! "), (re.compile(r"\("), r" \( "),
    (re.compile(r"\)"), r" \) "), (re.compile(r"\?"), r" \? "), (re.compile(r"\s{2,}"), " "),
]


def kim_clean(text):
    """Kim's clean_str, rule for rule (his code lower-cases at the end; here `lower` does)."""
    for pattern, repl in _KIM_RULES:
        text = pattern.sub(repl, text)
    return text.strip()


def tokenize(text, scheme="kim", lower=True):
    """-> list of tokens."""
    if scheme == "kim":
        text = kim_clean(text)
    elif scheme != "whitespace":
        raise ValueError(f"tokenizer {scheme!r} is unknown; use one of {', '.join(TOKENIZERS)}")
    if lower:
        text = text.lower()
    return text.split()


class Vocabulary:
    def __init__(self, words):
        self.words = [PAD, UNK] + [w for w in words if w not in (PAD, UNK)]
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, sentences, min_freq=1, max_size=None):
        """From tokenised sentences: words seen >= min_freq times, most frequent first."""
        if min_freq < 1:
            raise ValueError(f"--min-freq must be >= 1, got {min_freq}")
        counts = Counter(w for s in sentences for w in s)
        words = sorted((w for w, c in counts.items() if c >= min_freq),
                       key=lambda w: (-counts[w], w))
        return cls(words[:max_size] if max_size else words)

    def __len__(self):
        return len(self.words)

    def __contains__(self, word):
        return word in self.index

    def encode(self, tokens):
        unk = 1
        return [self.index.get(t, unk) for t in tokens]

    def to_json(self):
        return self.words[2:]

    @classmethod
    def from_json(cls, words):
        return cls(words)
