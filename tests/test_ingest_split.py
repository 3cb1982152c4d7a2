"""Duplicates, near-duplicate groups and the group-aware split (components/ingest/split.py) on in-memory rows."""

from __future__ import annotations

import numpy as np

from components.ingest import split as ingest_split
from components.ingest.split import SPLITS, assign_splits, connected_groups, near_duplicate_pairs


def random_hash(rng: np.random.Generator) -> list[int]:
    return [int(rng.integers(0, 2**64, dtype=np.uint64)) for _ in range(4)]


def as_hex(words: list[int]) -> str:
    return "".join(f"{word:016x}" for word in words)


def test_near_duplicate_pairs_finds_every_close_pair_and_no_other():
    rng = np.random.default_rng(1)
    base = random_hash(rng)
    flipped = base.copy()
    flipped[2] ^= 0b1011  # 3 bits differ
    hashes = [as_hex(base), as_hex(flipped), as_hex(base), as_hex(random_hash(rng))]
    assert near_duplicate_pairs(hashes, 3).tolist() == [[0, 1], [0, 2], [1, 2]]
    assert near_duplicate_pairs(hashes, 2).tolist() == [[0, 2]]
    assert near_duplicate_pairs(hashes, -1).tolist() == []
    # Against the all-pairs distances on random data with planted neighbours.
    many = [random_hash(rng) for _ in range(60)]
    for index in range(0, 60, 6):
        many[index + 1] = [word ^ (1 << int(rng.integers(0, 64))) for word in many[index]]
    words = np.array(many, dtype=np.uint64)
    distances = np.bitwise_count(words[:, None, :] ^ words[None, :, :]).sum(axis=2)
    expected = [[i, j] for i in range(60) for j in range(i + 1, 60) if distances[i, j] <= 8]
    assert near_duplicate_pairs([as_hex(words) for words in many], 8).tolist() == expected


def test_a_crowded_hash_bucket_is_split_again_and_every_close_pair_still_found(monkeypatch):
    """A folder of similar pictures puts many images in one block's bucket: the bucket is searched again on the bits
    not yet used (sub-quadratic), and the pairs are the all-pairs answer."""
    from components.ingest import split

    rng = np.random.default_rng(2)
    centres = rng.integers(0, 256, size=(6, 32), dtype=np.uint8)
    packed = np.repeat(centres, 150, axis=0)  # 900 hashes in 6 clusters: every block's buckets hold 150+
    noise = rng.random((len(packed), 256)) < 0.02  # ~5 bits each from its centre
    packed = np.packbits(np.unpackbits(packed, axis=1) ^ noise, axis=1)
    words = packed.view(">u8")
    distances = np.bitwise_count(words[:, None, :] ^ words[None, :, :]).sum(axis=2)
    rows, columns = np.nonzero(np.triu(distances <= 8, k=1))
    compared = []
    original = split._compare
    monkeypatch.setattr(split, "BUCKET", 64)
    monkeypatch.setattr(
        split, "_compare", lambda bucket, *args: (compared.append(len(bucket)), original(bucket, *args))
    )
    pairs = near_duplicate_pairs([bytes(row).hex() for row in packed], 8)
    assert sorted(map(tuple, pairs.tolist())) == sorted(zip(rows.tolist(), columns.tolist(), strict=True))
    assert max(compared) < 150  # no bucket of a whole cluster was compared all-pairs


def test_connected_groups_link_chains_and_number_groups_by_first_member():
    groups = connected_groups(6, np.array([[4, 5], [0, 2], [2, 3]]))
    assert groups.tolist() == [0, 1, 0, 0, 2, 2]


def test_assign_splits_is_stratified_seeded_and_allows_no_val():
    labels = np.repeat(np.arange(4), 25)
    splits = assign_splits(labels, val_fraction=0.2, test_fraction=0.2, seed=3)
    counts = {split: np.bincount(labels[splits == split], minlength=4).tolist() for split in SPLITS}
    assert counts == {"train": [15] * 4, "val": [5] * 4, "test": [5] * 4}
    np.testing.assert_array_equal(splits, assign_splits(labels, val_fraction=0.2, test_fraction=0.2, seed=3))
    assert set(assign_splits(labels, val_fraction=0.0, test_fraction=0.2, seed=3)) == {"train", "test"}
    tiny = assign_splits(np.array([0, 1, 1, 1, 1, 1]), val_fraction=0.2, test_fraction=0.2, seed=3)
    assert tiny[0] == "train"  # too small to split: stays in train, the class suite reports it


def test_a_plain_stratified_split_is_what_groups_of_one_give():
    """Without duplicates the split is the classic one: the first round(n x fraction) of a seeded permutation."""
    labels = np.repeat(np.arange(3), 17)
    rng = np.random.default_rng(7)
    expected = np.full(len(labels), "train", dtype=object)
    for label in range(3):
        members = rng.permutation(np.flatnonzero(labels == label))
        expected[members[:3]] = "test"  # round(17 x 0.15) = 3
        expected[members[3:5]] = "val"  # round(17 x 0.1) = 2
    np.testing.assert_array_equal(assign_splits(labels, 0.1, 0.15, seed=7, groups=np.arange(51)), expected)


def test_groups_never_straddle_splits_and_the_shares_stay_close():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 100)
    groups = np.arange(200)
    for start in range(0, 200, 10):  # a group of 4 near-identical images every 10 images
        groups[start : start + 4] = start
    _, groups = np.unique(groups, return_inverse=True)
    for seed in range(5):
        splits = assign_splits(labels, val_fraction=0.1, test_fraction=0.1, seed=seed, groups=groups)
        for group in np.unique(groups):
            assert len(set(splits[groups == group])) == 1
        for label in range(2):
            test = int(np.sum((labels == label) & (splits == "test")))
            assert 8 <= test <= 12, (seed, label, test)
    assert rng is not None


def test_given_splits_are_kept_and_val_is_carved_from_train_group_by_group():
    labels = np.repeat(np.arange(2), 10)
    given = np.array((["train"] * 8 + ["test"] * 2) * 2)
    splits = assign_splits(labels, val_fraction=0.25, test_fraction=0.5, seed=0, given=given)
    assert (splits[given == "test"] == "test").all()
    assert np.bincount(labels[splits == "val"]).tolist() == [2, 2]
    with_val = np.where(np.arange(20) % 10 == 0, "val", given)
    np.testing.assert_array_equal(assign_splits(labels, 0.25, 0.5, seed=0, given=with_val), with_val)
    groups = np.arange(20)
    groups[1] = 0  # a pair in class 0's given train
    _, groups = np.unique(groups, return_inverse=True)
    for seed in range(6):
        carved = assign_splits(labels, 0.25, 0.5, seed=seed, given=given, groups=groups)
        assert carved[0] == carved[1]


def rows(*specs) -> list[dict]:
    """(file, class, sha, phash[, given split]) -> ingest rows."""
    names = sorted({spec[1] for spec in specs})
    return [
        {
            "file": spec[0],
            "class_name": spec[1],
            "label": names.index(spec[1]),
            "given_split": spec[4] if len(spec) > 4 else None,
            "problem": None,
            "skipped": None,
            "sha256": spec[2],
            "phash": spec[3],
        }
        for spec in sorted(specs)
    ]


def test_plan_keeps_copies_once_groups_near_ones_and_flags_conflicts_and_leaks():
    rng = np.random.default_rng(2)
    hashes = [as_hex(random_hash(rng)) for _ in range(8)]
    near = hashes[3][:-1] + ("0" if hashes[3][-1] != "0" else "1")  # 1 to 4 bits away
    plan = ingest_split.plan_examples(
        rows(
            ("a/1.png", "a", "s1", hashes[0]),
            ("a/1_copy.png", "a", "s1", hashes[0]),  # same label: kept once
            ("a/2.png", "a", "s2", hashes[1]),
            ("b/1.png", "b", "s1", hashes[0]),  # identical to a/1.png, other label: a conflict
            ("b/2.png", "b", "s3", hashes[3]),
            ("b/2_brighter.png", "b", "s4", near),  # near: one group with b/2.png
            ("b/3.png", "b", "s5", hashes[5]),
        ),
        max_distance=8,
        val_fraction=0.0,
        test_fraction=0.5,
        seed=0,
    )
    assert plan.dropped == {"a/1_copy.png"}
    duplicates = plan.duplicates.set_index("file")
    assert duplicates.loc["a/1_copy.png", "duplicate_of"] == "a/1.png" and duplicates.loc["a/1_copy.png", "same_label"]
    assert duplicates.loc["b/1.png", "duplicate_class"] == "a" and not duplicates.loc["b/1.png", "same_label"]
    examples = plan.examples.set_index("file")
    assert "a/1_copy.png" not in examples.index
    assert examples.loc["b/2.png", "split"] == examples.loc["b/2_brighter.png", "split"]
    assert examples.loc["b/2.png", "near_duplicate_group"] == examples.loc["b/2_brighter.png", "near_duplicate_group"]
    assert examples["near_duplicate_of"].isna().all()  # no given splits: nothing leaks


def test_a_group_across_the_users_own_splits_is_a_leak_named_once():
    rng = np.random.default_rng(3)
    shared, other = as_hex(random_hash(rng)), as_hex(random_hash(rng))
    plan = ingest_split.plan_examples(
        rows(
            ("train/a/1.png", "a", "s1", shared, "train"),
            ("train/a/2.png", "a", "s2", other, "train"),
            ("test/a/1.png", "a", "s1", shared, "test"),  # the same image in both of the user's splits
        ),
        max_distance=-1,  # near duplicates off: identical copies are still linked
        val_fraction=0.0,
        test_fraction=0.1,
        seed=0,
    )
    leaks = plan.examples.set_index("file")["near_duplicate_of"]
    assert leaks["test/a/1.png"] == "train/a/1.png (train)"
    assert leaks[["train/a/1.png", "train/a/2.png"]].isna().all()
    assert plan.dropped == set()  # a copy in another of the user's splits is a leak, never silently dropped
