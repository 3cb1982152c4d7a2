"""What the schema command proposes for documents (class folders of text files, or a table's text column): the checks
of ingest.text, read off the documents with ingest's own reader and plan (components/ingest/kinds/text_rows.py).
Reads data/raw, writes nothing (pipelines/schema.py writes the proposal into params.yaml).

Rules (each leaves room for more documents of the same kind):
- markup: `strip_markup: true` when at least 1% of the documents hold tags such as `<br />`;
- length: `max_chars` twice the longest document (a length outlier is an error above it), `min_chars` 1;
- empty documents: `max_empty_share` twice the observed share plus 1% (they are skipped and counted);
- classes: their number, each share within half its observed value below and above, `min_per_class` half the
  smallest class;
- out-of-vocabulary: `max_oov_share` 1.5 times the mean share, on a seeded fifth of the documents, of tokens the
  other four fifths never hold, plus 5%;
- near duplicates: 0.9 Jaccard similarity of word 5-shingles.
A table holds documents when its columns besides the target are free text (and ids or constant columns, which are
no features): its longest free-text column is the documents' (`ingest.text.column`), data.target their label,
and data.kind becomes `text`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfpipe.texts import MARKUP, tokens

MARKUP_SHARE = 0.01


def oov_share(texts: list[str], seed: int) -> float:
    """Mean share of a seeded fifth's tokens that the other four fifths never hold."""
    if len(texts) < 5:
        return 0.0
    held = np.random.default_rng(seed).random(len(texts)) < 0.2
    vocabulary = {token for text, out in zip(texts, held, strict=True) if not out for token in tokens(text)}
    shares = []
    for text, out in zip(texts, held, strict=True):
        words = tokens(text) if out else []
        if words:
            shares.append(sum(word not in vocabulary for word in words) / len(words))
    return float(np.mean(shares)) if shares else 0.0


def propose_text(rows: pd.DataFrame, class_names: list[str], seed: int) -> tuple[dict, list[str]]:
    """ingest.text from the documents' rows (text_rows.Documents.rows: file, class_name, text, empty, skipped,
    problem), and notes for the user."""
    read = rows[rows["skipped"].isna() & rows["problem"].isna()]
    texts = read.loc[~read["empty"], "text"].tolist()
    if not texts:
        raise ValueError("no document holds any text: nothing to learn from")
    markup = float(np.mean([bool(MARKUP.search(text)) for text in texts]))
    counts = read.loc[~read["empty"], "class_name"].value_counts().reindex(class_names, fill_value=0)
    shares = counts / max(1, counts.sum())
    empty_share = float(read["empty"].mean())
    oov = oov_share(texts, seed)
    proposal = {
        "strip_markup": markup >= MARKUP_SHARE,
        "min_chars": 1,
        "max_chars": int(max(1000, 2 * max(len(text) for text in texts))),
        "max_empty_share": round(min(1.0, 2 * empty_share + 0.01), 3) if empty_share else 0.0,
        "max_oov_share": round(min(1.0, 1.5 * oov + 0.05), 3),
        "num_classes": len(class_names) if len(class_names) >= 2 else None,
        "min_per_class": max(1, int(counts.min()) // 2),
        "min_class_share": round(float(shares.min()) / 2, 4),
        "max_class_share": round(min(1.0, float(shares.max()) * 1.5), 4),
        "near_duplicate_similarity": 0.9,
    }
    lengths = pd.Series([len(tokens(text)) for text in texts])
    notes = [
        f"{len(texts)} documents in {len(class_names)} classes ("
        + ", ".join(f"{name} {int(counts[name])}" for name in class_names[:10])
        + f"); tokens a document: median {lengths.median():.0f}, 95th percentile {lengths.quantile(0.95):.0f}"
    ]
    if proposal["strip_markup"]:
        notes.append(f"{markup:.0%} of the documents hold markup (<br /> ...): strip_markup: true")
    if read["empty"].any():
        notes.append(f"{int(read['empty'].sum())} empty document(s): skipped and counted by ingest")
    encodings = read["encoding"].value_counts().to_dict()
    if set(encodings) - {"utf-8"}:
        notes.append(f"encodings: {encodings} (cp1252: not valid UTF-8, read as Windows-1252)")
    if rows["skipped"].notna().any():
        notes.append(f"{int(rows['skipped'].notna().sum())} file(s) that are not documents: skipped by ingest")
    return proposal, notes


def text_column(frame: pd.DataFrame, columns: dict, target: str) -> str | None:
    """A table's column of documents: when its only columns besides the target are free text (table_schema's type
    `text`), ids and constant ones, the free-text column with the longest cells. A table with other features is a
    table, its free text ignored (and named)."""
    texts = [name for name, spec in columns.items() if spec.get("type") == "text" and name != target]
    features = [name for name, spec in columns.items() if spec.get("role", "feature") == "feature" and name != target]
    if not texts or features:
        return None
    return max(texts, key=lambda name: frame[name].fillna("").astype(str).str.len().mean())
