"""Generate data/negation_sentiment.tsv: the embedded default dataset of `numconv train-text`.

Short movie-review sentences whose polarity is the adjective's, flipped by a negator just before
it ("the plot was good" +, "the plot was not good" -, "the plot was not bad" +). Every adjective and
every negator occurs equally often with both labels, so a bag-of-words model sees no signal beyond
chance: only a model that reads word order (a convolution over neighbouring words) can do well.

Columns: split (train/test), label (positive/negative), text. Deterministic: run it again and the
file is byte-identical.   python data/make_negation_sentiment.py
"""
import os
import random

SUBJECTS = ["the movie", "this film", "the plot", "the acting", "the ending", "the cast",
            "the script", "the soundtrack", "the story", "the dialogue", "the pacing",
            "the cinematography", "this sequel", "the performance", "the screenplay"]
VERBS = ["was", "is", "felt", "seemed", "looked", "sounded", "remained", "turned out"]
POSITIVE = ["good", "great", "wonderful", "brilliant", "moving", "funny", "charming", "superb",
            "clever", "delightful", "gripping", "fresh"]
NEGATIVE = ["bad", "awful", "boring", "dull", "terrible", "weak", "clumsy", "tedious", "bland",
            "painful", "stale", "messy"]
NEGATORS = ["not", "never", "hardly"]
ADVERBS = ["very", "really", "particularly", "terribly", "that"]
PREFIXES = ["", "", "", "honestly ,", "overall ,", "i think", "frankly ,", "in short ,"]
SUFFIXES = ["", "", "", "to me", "in the end", "at all", "for sure", "if you ask me"]


def sentence(rng):
    positive_word = rng.random() < 0.5
    negated = rng.random() < 0.5
    adj = rng.choice(POSITIVE if positive_word else NEGATIVE)
    words = [rng.choice(PREFIXES), rng.choice(SUBJECTS), rng.choice(VERBS)]
    if negated:
        words.append(rng.choice(NEGATORS))
    if rng.random() < 0.3:
        words.append(rng.choice(ADVERBS))
    words += [adj, rng.choice(SUFFIXES)]
    label = "positive" if positive_word != negated else "negative"
    return " ".join(w for w in words if w), label


def generate(n_train=2400, n_test=600, seed=2014):
    rng = random.Random(seed)
    seen, rows = set(), []
    while len(rows) < n_train + n_test:
        text, label = sentence(rng)
        if text not in seen:
            seen.add(text)
            rows.append((label, text))
    return [("train",) + r for r in rows[:n_train]] + [("test",) + r for r in rows[n_train:]]


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "negation_sentiment.tsv")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("split\tlabel\ttext\n")
        for row in generate():
            f.write("\t".join(row) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
