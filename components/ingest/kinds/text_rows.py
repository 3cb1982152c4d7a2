"""Documents for ingest: read from class folders (components/ingest/layout.py's layouts, nested folders included) or a
table's text column, each decoded by the one reader (tfpipe/texts.py); then the plan: empty documents skipped and
counted, identical documents kept once (two labels: an error), near-identical ones (MinHash over word 5-shingles,
datasketch's LSH) kept in one split, and a stratified, seeded, group-aware split. Reads data/raw, writes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from components.ingest.layout import read_layout
from components.ingest.split import assign_splits, connected_groups
from tfpipe.config import Params
from tfpipe.tables import ROW, TableFile, as_text
from tfpipe.texts import TEXT_SUFFIXES, clean, decode, looks_like_text, tokens

SHINGLE = 5  # words in a shingle: near duplicates share most of their 5-word runs
PERMUTATIONS = 64  # MinHash permutations: the Jaccard estimate's error is about 1/8 at this count


@dataclass
class Documents:
    """One row per document read: file, class_name, given split, text (cleaned), chars, tokens, encoding, empty,
    skipped (not a document), problem (a file that cannot be read)."""

    rows: pd.DataFrame
    class_names: list[str]
    layout: str
    hidden: int = 0


def read_folder(raw_dir: Path, params: Params) -> Documents:
    """Class folders (or train|test split folders) of text files; other files (images, binaries) are skipped."""
    layout = read_layout(raw_dir)
    strip = params.ingest.text.strip_markup
    rows = []
    for example in layout.examples:
        row = {"file": example.file, "class_name": example.class_name, "given_split": example.split}
        if example.problem:
            rows.append({**row, "problem": example.problem})
            continue
        data = example.path.read_bytes()
        if example.path.suffix.lower() not in TEXT_SUFFIXES or not looks_like_text(data):
            rows.append({**row, "skipped": "not a text document"})
            continue
        text, encoding = decode(data)
        rows.append({**row, "text": clean(text, strip), "encoding": encoding})
    return Documents(describe(pd.DataFrame(rows)), layout.class_names, layout.kind, layout.hidden_files)


def read_table(path: Path, params: Params) -> Documents:
    """A table's text column (ingest.text.column) and its label column (data.target); rows without a label are
    skipped and counted."""
    text = params.ingest.text
    frame = TableFile.open(path).read()
    missing = [column for column in (text.column, params.data.target) if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: no column {missing} (ingest.text.column, data.target); its columns: {list(frame)}")
    labels = as_text(frame[params.data.target])
    documents = frame[text.column].fillna("").astype(str).map(lambda cell: clean(cell, text.strip_markup))
    rows = pd.DataFrame(
        {
            "file": [f"row {row}" for row in frame[ROW]],
            "class_name": labels,
            "given_split": None,
            "text": documents,
            "encoding": "utf-8",
            "skipped": np.where(labels.isna(), "no label", None),
        }
    )
    class_names = sorted(labels.dropna().unique().tolist())
    return Documents(describe(rows), class_names, "table")


def describe(rows: pd.DataFrame) -> pd.DataFrame:
    for column in ("text", "encoding", "skipped", "problem"):
        if column not in rows:
            rows[column] = None
    text = rows["text"].fillna("")
    rows["chars"] = text.str.len()
    rows["tokens"] = text.map(lambda value: len(words(value)))
    rows["empty"] = rows["text"].notna() & (rows["tokens"] == 0)
    return rows


@functools.lru_cache(maxsize=1 << 17)
def words(text: str) -> tuple[str, ...]:
    """tfpipe/texts.tokens, once a document: describe, the duplicate key, the shingles and the out-of-vocabulary
    share all count the same words."""
    return tuple(tokens(text))


def fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer on uint32 values: every input bit reaches every output bit."""
    values = values.astype(np.uint32, copy=True)
    values ^= values >> np.uint32(16)
    values *= np.uint32(0x85EBCA6B)
    values ^= values >> np.uint32(13)
    values *= np.uint32(0xC2B2AE35)
    values ^= values >> np.uint32(16)
    return values


def shingle_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(the 32-bit hash of every word 5-shingle of every document, concatenated; where each document's start). A
    word's hash is its CRC-32 (the same in every process); a shingle's mixes its words' in order. A document shorter
    than a shingle is one shingle of all its words."""
    vocabulary: dict[str, int] = {}
    documents = [[vocabulary.setdefault(word, len(vocabulary)) for word in words(text)] for text in texts]
    word_hashes = np.array([zlib.crc32(word.encode()) for word in vocabulary], dtype=np.uint64)
    hashes, starts, position = [], [], 0
    for ids in documents:
        values = word_hashes[np.asarray(ids, dtype=np.int64)] if ids else np.zeros(1, np.uint64)
        count = max(1, len(values) - SHINGLE + 1)
        mixed = np.zeros(count, np.uint64)
        for offset in range(min(SHINGLE, len(values))):  # a polynomial of the shingle's word hashes, mod 2^32
            mixed = (mixed * np.uint64(0x9E3779B1) + values[offset : offset + count]) & np.uint64(0xFFFFFFFF)
        hashes.append(fmix32(mixed))
        starts.append(position)
        position += count
    return np.concatenate(hashes) if hashes else np.zeros(0, np.uint32), np.array(starts, dtype=np.int64)


def minhash_signatures(texts: list[str], seed: int) -> np.ndarray:
    """[documents, PERMUTATIONS] uint32 MinHash signatures: the minimum over a document's shingles of each seeded
    affine permutation (a * h + b mod 2^32, a odd) of their hashes, computed for all documents at once in numpy."""
    hashes, starts = shingle_hashes(texts)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 31, PERMUTATIONS, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 1 << 32, PERMUTATIONS, dtype=np.uint64)
    signatures = np.empty((len(starts), PERMUTATIONS), np.uint32)
    ends = np.append(starts[1:], len(hashes))
    first = 0
    while first < len(starts):  # documents a chunk, ~64k shingles: a few MB of uint64 at a time
        last = int(np.searchsorted(starts, starts[first] + (1 << 16), side="right"))
        last = max(last, first + 1)
        chunk = hashes[starts[first] : ends[last - 1]].astype(np.uint64)
        permuted = (chunk[:, None] * a + b) & np.uint64(0xFFFFFFFF)
        signatures[first:last] = np.minimum.reduceat(permuted, starts[first:last] - starts[first], axis=0)
        first = last
    return signatures


def minhash_pairs(texts: list[str], similarity: float, seed: int) -> np.ndarray:
    """Pairs (i, j) of documents whose word 5-shingles' Jaccard similarity, estimated by MinHash, reaches
    `similarity` (datasketch's LSH finds the candidates among the signatures; each is confirmed by the estimate
    itself)."""
    from datasketch import LeanMinHash, MinHashLSH

    signatures = minhash_signatures(texts, seed)
    lsh = MinHashLSH(threshold=similarity, num_perm=PERMUTATIONS)
    hashes = [LeanMinHash(seed=seed, hashvalues=row, scheme="affine32") for row in signatures]
    for index, minhash in enumerate(hashes):
        lsh.insert(index, minhash)
    pairs = set()
    for index, minhash in enumerate(hashes):
        others = [other for other in lsh.query(minhash) if other > index]
        if others:
            shares = (signatures[others] == signatures[index]).mean(axis=1)
            pairs |= {(index, other) for other, share in zip(others, shares, strict=True) if share >= similarity}
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


@dataclass
class DocumentPlan:
    kept: pd.DataFrame  # documents kept, with label, split, group, near_duplicate_of (a leak across given splits)
    copies: pd.DataFrame  # file, class_name, copy_of, copy_class, same_label: identical after cleaning
    groups: int  # near-duplicate groups of two or more documents


def plan_documents(documents: Documents, params: Params) -> DocumentPlan:
    text_params, ingest = params.ingest.text, params.ingest
    readable = documents.rows[documents.rows["problem"].isna() & documents.rows["skipped"].isna()]
    candidates = readable[~readable["empty"]].reset_index(drop=True)
    key = candidates["text"].map(lambda text: hashlib.sha1(" ".join(words(text)).encode()).hexdigest())
    first = pd.Series(np.arange(len(candidates))).groupby(key.to_numpy()).transform("first").to_numpy()
    copy = first != np.arange(len(candidates))
    copies = pd.DataFrame(
        {
            "file": candidates.loc[copy, "file"].to_numpy(),
            "class_name": candidates.loc[copy, "class_name"].to_numpy(),
            "copy_of": candidates["file"].to_numpy()[first[copy]],
            "copy_class": candidates["class_name"].to_numpy()[first[copy]],
        }
    )
    copies["same_label"] = copies["class_name"] == copies["copy_class"]
    kept = candidates[~copy].reset_index(drop=True)
    index = {name: position for position, name in enumerate(documents.class_names)}
    kept["label"] = kept["class_name"].map(index).fillna(-1).astype(np.int64)
    pairs = np.zeros((0, 2), np.int64)
    if text_params.near_duplicate_similarity > 0 and len(kept) > 1:
        pairs = minhash_pairs(kept["text"].tolist(), text_params.near_duplicate_similarity, ingest.seed)
    groups = connected_groups(len(kept), pairs)
    kept["group"] = groups
    given = kept["given_split"].to_numpy() if kept["given_split"].notna().any() else None
    kept["split"] = assign_splits(
        kept["label"].to_numpy(), ingest.val_fraction, ingest.test_fraction, ingest.seed, given=given, groups=groups
    )
    kept["near_duplicate_of"] = None
    if given is not None and len(pairs):  # your own train/ and test/ folders part a group: a leak, named
        for left, right in pairs:
            if {kept.at[left, "split"], kept.at[right, "split"]} >= {"train", "test"}:
                kept.at[right, "near_duplicate_of"] = kept.at[left, "file"]
    sizes = np.bincount(groups) if len(groups) else np.zeros(0)
    return DocumentPlan(kept, copies, int((sizes > 1).sum()))


def oov_shares(kept: pd.DataFrame) -> pd.Series:
    """Each val/test document's share of tokens the train split never holds (0 for train documents)."""
    vocabulary = {token for text in kept.loc[kept["split"] == "train", "text"] for token in words(text)}

    def share(row) -> float:
        found = words(row.text)
        return 0.0 if row.split == "train" or not found else sum(w not in vocabulary for w in found) / len(found)

    return pd.Series([share(row) for row in kept.itertuples()], index=kept.index)
