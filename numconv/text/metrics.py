"""Tagging metrics with conlleval's semantics (the CoNLL shared tasks' scorer, conlleval.pl).

A chunk is a maximal run of tokens of one type: it starts at a B (or S) tag, at an I/E whose type
differs from the previous token's, or at an I/E after an O/E/S; it ends before O, before B/S,
before a change of type, and after E/S. So IOB1 (B only between adjacent same-type chunks), IOB2
(every chunk starts with B) and IOBES tags all score correctly, and an ill-formed I-X after O starts
a chunk, as conlleval does. A predicted chunk is correct when its type, first and last token all
match a gold chunk. Precision = correct / predicted, recall = correct / gold, F1 their harmonic mean
(in percent, as conlleval prints them). Sentence boundaries end every chunk.
"""


def _split(tag):
    if tag in ("O", "", "."):
        return "O", ""
    head, sep, rest = tag.partition("-")
    if sep and head in ("B", "I", "E", "S"):
        return head, rest
    return "I", tag            # a bare type ("NP") reads as inside a chunk of that type


def _ends(prev_tag, tag, prev_type, type_):
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "O", "S"):
        return True
    return prev_tag != "O" and prev_type != type_


def _starts(prev_tag, tag, prev_type, type_):
    if tag in ("B", "S"):
        return True
    if tag in ("I", "E") and prev_tag in ("E", "S", "O"):
        return True
    return tag != "O" and prev_type != type_


def chunks(tags):
    """[(type, first, last)] of one sentence's tag sequence."""
    out, start, prev_tag, prev_type = [], None, "O", ""
    for i, t in enumerate(list(tags) + ["O"]):
        tag, type_ = _split(t)
        if start is not None and _ends(prev_tag, tag, prev_type, type_):
            out.append((prev_type, start, i - 1))
            start = None
        if _starts(prev_tag, tag, prev_type, type_):
            start = i
        prev_tag, prev_type = tag, type_
    return out


def chunk_scores(gold, pred):
    """gold, pred: lists of tag sequences (one per sentence). -> dict with precision, recall, f1
    (percent), token accuracy (fraction) and per-type scores."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    n_gold = n_pred = n_correct = tokens = right = 0
    per = {}
    for g, p in zip(gold, pred):
        if len(g) != len(p):
            raise ValueError(f"a sentence has {len(g)} gold tags but {len(p)} predicted")
        tokens += len(g)
        right += sum(a == b for a, b in zip(g, p))
        gc, pc = set(chunks(g)), set(chunks(p))
        n_gold += len(gc)
        n_pred += len(pc)
        n_correct += len(gc & pc)
        for kind, group in (("gold", gc), ("pred", pc), ("correct", gc & pc)):
            for c in group:
                per.setdefault(c[0], {"gold": 0, "pred": 0, "correct": 0})[kind] += 1

    def prf(c, np_, ng):
        p = 100.0 * c / np_ if np_ else 0.0
        r = 100.0 * c / ng if ng else 0.0
        return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}

    out = prf(n_correct, n_pred, n_gold)
    out.update(accuracy=right / tokens if tokens else 0.0, gold_chunks=n_gold,
               predicted_chunks=n_pred, correct_chunks=n_correct,
               per_type={k: prf(v["correct"], v["pred"], v["gold"]) | {"gold": v["gold"]}
                         for k, v in sorted(per.items())})
    return out
