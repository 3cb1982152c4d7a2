"""Duplicates, near-duplicate groups and the group-aware split: reads the per-example rows, writes nothing.

Ingest and the schema command (pipelines/schema.py) both call `plan_examples`, so a proposal is computed on the
examples and the split that ingest will write.

- **Exact duplicates** (the same pixels after decoding: sha256) with the same label are kept once: the first file
  by name is kept, every other copy is dropped and listed. Copies with different labels are an error that names
  both files and both labels (`duplicates` table). With given split folders, only copies inside one split are
  dropped; copies in two of the user's splits are a leak (below).
- **Near duplicates**: images whose 256-bit perceptual hashes differ in at most `near_duplicate_max_distance` bits
  are linked, and each connected group (exact copies included) goes to one split, so a re-encoded or slightly
  shifted copy never lands in test while its twin trains. The split stays stratified: per class, seeded, groups
  are taken in a random order until test and val reach their share (a lone image is a group of one, so a folder
  without duplicates splits exactly as a plain stratified split).
- **Given splits** (train/, test/, optional val/) are the user's and never moved: a group that spans two of them
  is a leak, reported by the validation (`near_duplicate_of`) with both files named. val carved out of a given
  train/ is group-aware like the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from tfpipe.records import SPLITS

BUCKET = 512  # images sharing one block value beyond this are split further by the bits not yet used
COMPARED = 1 << 22  # hash pairs compared at once: bounds the memory of one comparison (~128 MiB)


def near_duplicate_pairs(hashes: list[str], max_distance: int) -> np.ndarray:
    """Index pairs (i < j) whose hashes differ in at most max_distance bits, as an int array [P, 2].

    Pigeonhole (multi-index hashing): two hashes within d bits agree exactly on at least one of d+1 bit blocks, so
    only examples sharing a block value are compared: no all-pairs distance matrix. When many images share a block
    value (a folder of similar pictures), that bucket is searched again the same way on the bits not yet used (the
    pair differs in at most d of those too), so the cost stays sub-quadratic unless the hashes themselves are
    nearly all alike; a bucket that cannot be split further is compared in slices of bounded memory.
    """
    if max_distance < 0 or len(hashes) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    packed = np.frombuffer(bytes.fromhex("".join(hashes)), np.uint8).reshape(len(hashes), -1)
    words, bits = packed.view(">u8"), np.unpackbits(packed, axis=1)
    found: set[tuple[int, int]] = set()
    _search(np.arange(len(hashes)), np.arange(bits.shape[1]), words, bits, max_distance, found)
    return np.array(sorted(found), dtype=np.int64).reshape(-1, 2)


def _search(
    members: np.ndarray, columns: np.ndarray, words: np.ndarray, bits: np.ndarray, max_distance: int, found: set
) -> None:
    for block in np.array_split(columns, max_distance + 1):
        keys = np.packbits(bits[np.ix_(members, block)], axis=1)
        if keys.shape[1] <= 8:  # one integer per key: np.unique on rows (axis=0) is ~10x slower
            keys = np.pad(keys, ((0, 0), (0, 8 - keys.shape[1]))).view(">u8").reshape(-1)
        _, group, sizes = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        group = group.reshape(-1)
        shared = np.flatnonzero(sizes[group] > 1)
        order = shared[np.argsort(group[shared], kind="stable")]
        rest = np.setdiff1d(columns, block)
        for bucket in np.split(members[order], np.flatnonzero(np.diff(group[order])) + 1):
            if len(bucket) < 2:
                continue
            if len(bucket) > BUCKET and len(rest) >= 4 * (max_distance + 1) and len(bucket) < len(members):
                _search(bucket, rest, words, bits, max_distance, found)
            else:
                _compare(bucket, words, max_distance, found)


def _compare(bucket: np.ndarray, words: np.ndarray, max_distance: int, found: set) -> None:
    """Every close pair inside one bucket, a slice of rows at a time."""
    step = max(1, COMPARED // len(bucket))
    for start in range(0, len(bucket), step):
        rows = bucket[start : start + step]
        distance = np.bitwise_count(words[rows][:, None, :] ^ words[bucket][None, :, :]).sum(axis=2)
        row, column = np.nonzero(distance <= max_distance)
        first, second = rows[row], bucket[column]
        keep = first < second
        found.update(zip(first[keep].tolist(), second[keep].tolist(), strict=True))


def connected_groups(count: int, pairs: np.ndarray) -> np.ndarray:
    """A group id per item (0..G-1, numbered by each group's first item) from linked pairs (scipy's components)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if count == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(count, count))
    _, labels = connected_components(graph, directed=False)
    _, first = np.unique(labels, return_index=True)  # renumber in order of first appearance: stable ids
    renumber = np.empty(len(first), dtype=np.int64)
    renumber[np.argsort(first)] = np.arange(len(first))
    return renumber[labels]


def assign_splits(
    labels: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    given: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """A split name per example, stratified per class and group-aware (module docstring).

    Per class, round(n x test_fraction) go to test and round(n x val_fraction) to val: its examples are visited in
    a seeded random order and the group of each one not yet placed goes to test while test's share is not reached
    (and at least half the group fits), then to val likewise, else to train. With `given` splits those are kept;
    when no example is given val, val_fraction of each class's given train examples becomes val, group by group.
    Never fails: a class too small to split stays in train, and the per-class expectations report it.
    """
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    sizes = np.bincount(groups, minlength=int(groups.max()) + 1 if len(groups) else 0)
    rng = np.random.default_rng(seed)
    splits = np.full(len(labels), "train", dtype=object) if given is None else np.asarray(given, dtype=object).copy()
    carve_val = given is not None and not (splits == "val").any() and val_fraction > 0
    placed = np.zeros(len(sizes), dtype=bool)
    by_group = np.argsort(groups, kind="stable")  # a group's members without scanning every example
    bounds = np.concatenate([[0], np.cumsum(sizes)])

    def members_of(group: int) -> np.ndarray:
        return by_group[bounds[group] : bounds[group + 1]]

    def place(members: np.ndarray, quotas: dict[str, int]) -> None:
        taken = dict.fromkeys(quotas, 0)
        for member in members:
            group = groups[member]
            if placed[group]:
                continue
            placed[group] = True
            # A group goes where at least half of it still fits the share: a lone image fits while one place is left.
            target = next(
                (split for split, quota in quotas.items() if 2 * (quota - taken[split]) >= sizes[group] > 0),
                "train",
            )
            splits[members_of(group)] = target
            if target in taken:
                taken[target] += sizes[group]

    for label in np.unique(labels):
        if given is None:
            members = rng.permutation(np.flatnonzero(labels == label))
            test_count = round(len(members) * test_fraction)
            val_count = min(round(len(members) * val_fraction), len(members) - test_count)
            place(members, {"test": test_count, "val": val_count})
        elif carve_val:
            members = rng.permutation(np.flatnonzero((labels == label) & (splits == "train")))
            place(members, {"val": round(len(members) * val_fraction)})
    return splits


@dataclass
class ExamplePlan:
    """What ingest does with the decoded examples: which are kept, their groups and splits, and what to report."""

    examples: pd.DataFrame  # the kept examples, with split, near_duplicate_group and near_duplicate_of columns
    duplicates: pd.DataFrame  # one row per dropped copy or conflicting copy: file, class_name, duplicate_of, ...
    dropped: set[str]  # files kept once elsewhere
    group_sizes: pd.Series  # images per near-duplicate group of 2 or more, by group id


DUPLICATE_COLUMNS = ["file", "class_name", "split", "duplicate_of", "duplicate_class", "same_label"]


def find_exact_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, set[str]]:
    """(the duplicates table, the files to drop) by the module docstring's rule; frame rows are decoded examples
    (file, class_name, sha256, given_split) sorted by file."""
    rows, dropped = [], set()
    frame = frame[frame["sha256"].duplicated(keep=False)]  # only copies: a groupby over every image is slow
    for _, members in frame.groupby("sha256", sort=False):
        if len(members) < 2:
            continue
        first = members.iloc[0]
        kept_in_split = {}
        for member in members.itertuples():
            split = member.given_split if isinstance(member.given_split, str) else ""
            if member.class_name != first.class_name:
                rows.append((member.file, member.class_name, split, first.file, first.class_name, False))
            elif split not in kept_in_split:
                kept_in_split[split] = member.file
            else:
                dropped.add(member.file)
                rows.append((member.file, member.class_name, split, kept_in_split[split], member.class_name, True))
    return pd.DataFrame(rows, columns=DUPLICATE_COLUMNS), dropped


def find_leaks(examples: pd.DataFrame, groups: np.ndarray) -> list[str | None]:
    """Per kept example, "<file> (<split>)" of its near-duplicate in an earlier given split (train before val
    before test), else None: each leaking pair is named once, on its test (or val) side."""
    partner: list[str | None] = [None] * len(examples)
    if examples["given_split"].isna().all():
        return partner
    order = {split: rank for rank, split in enumerate(SPLITS)}
    frame = pd.DataFrame(
        {"group": groups, "split": examples["given_split"].to_numpy(), "file": examples["file"].to_numpy()}
    )
    frame["rank"] = frame["split"].map(order)
    spanning = frame.groupby("group")["split"].nunique()
    leaking = frame[frame["group"].isin(spanning.index[spanning > 1])]
    for _, members in leaking.groupby("group"):
        members = members.sort_values(["rank", "file"])
        first = members.iloc[0]
        for position in members.index[members["rank"] > first["rank"]]:
            partner[position] = f"{first['file']} ({first['split']})"
    return partner


def plan_examples(
    rows: list[dict],
    *,
    max_distance: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> ExamplePlan:
    """Dedupes, groups and splits. `rows` are ingest's rows (file, class_name, label, given_split, problem and, for
    decoded images, sha256 and phash), sorted by file; a row with a problem keeps its place in the split (the run
    fails on it anyway) but is in no group."""
    frame = pd.DataFrame([row for row in rows if not row.get("skipped")])  # files that are not images are not examples
    decoded = frame[frame["problem"].isna()] if "problem" in frame else frame
    duplicates, dropped = find_exact_duplicates(decoded)
    candidates = frame[~frame["file"].isin(dropped)].reset_index(drop=True)
    decoded_mask = (
        candidates["problem"].isna().to_numpy() if "problem" in candidates else np.ones(len(candidates), bool)
    )
    decoded_index = np.flatnonzero(decoded_mask)
    hashes = candidates.loc[decoded_mask, "phash"].tolist()
    pairs = decoded_index[near_duplicate_pairs(hashes, max_distance)] if len(hashes) else np.zeros((0, 2), np.int64)
    # Exact copies in two given splits are linked whatever the distance (even -1: the check is off for near ones).
    shas = candidates.loc[decoded_mask, "sha256"]
    shas = shas[shas.duplicated(keep=False)]
    for _, members in shas.groupby(shas, sort=False):
        if len(members) > 1:
            first = members.index[0]
            pairs = np.concatenate([pairs, [[first, other] for other in members.index[1:]]])
    groups = connected_groups(len(candidates), pairs.astype(np.int64).reshape(-1, 2))
    given = candidates["given_split"].to_numpy() if candidates["given_split"].notna().all() else None
    splits = assign_splits(
        candidates["label"].to_numpy(),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        given=given,
        groups=groups,
    )
    candidates["split"] = splits
    sizes = pd.Series(groups).value_counts()
    candidates["near_duplicate_group"] = np.where(np.bincount(groups)[groups] > 1, groups, -1).astype(int)
    candidates["near_duplicate_of"] = find_leaks(candidates, groups)
    split_of = dict(zip(candidates["file"], splits, strict=True))
    duplicates["split"] = [split_of.get(kept, "") for kept in duplicates["duplicate_of"]]
    return ExamplePlan(candidates, duplicates, dropped, sizes[sizes > 1])
