"""Tests for components/ingest/layout.py: which files become examples, with which class and split."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from components.ingest.layout import LayoutError, read_layout


def touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_hidden_files_are_skipped_and_counted_and_paths_are_sorted(tmp_path):
    touch(tmp_path, "b/2.png", "b/1.png", "a/1.png", "a/.DS_Store", ".hidden/x.png", "a/.cache/y.png")
    layout = read_layout(tmp_path)
    assert layout.kind == "class_folders" and layout.class_names == ["a", "b"]
    assert [example.file for example in layout.examples] == ["a/1.png", "b/1.png", "b/2.png"]
    assert layout.hidden == [".hidden/x.png", "a/.DS_Store", "a/.cache/y.png"] and layout.hidden_files == 3


def test_integer_class_names_sort_numerically_and_classes_txt_fixes_the_order(tmp_path):
    touch(tmp_path, "10/x.png", "2/x.png", "1/x.png")
    assert read_layout(tmp_path).class_names == ["1", "2", "10"]
    (tmp_path / "classes.txt").write_text("10\n1\n2\nempty\n")
    assert read_layout(tmp_path).class_names == ["10", "1", "2", "empty"]  # a listed class may have 0 images
    (tmp_path / "classes.txt").write_text("1\n2\n")
    with pytest.raises(LayoutError, match=r"not listed: \['10'\]"):
        read_layout(tmp_path)


def test_empty_class_folder_is_a_class_without_examples(tmp_path):
    touch(tmp_path, "a/1.png")
    (tmp_path / "b").mkdir()
    layout = read_layout(tmp_path)
    assert layout.class_names == ["a", "b"] and len(layout.examples) == 1


def test_split_folders_keep_their_split_and_need_train_and_test(tmp_path):
    touch(tmp_path, "train/a/1.png", "train/b/1.png", "test/a/2.png", "test/b/2.png", "val/b/3.png")
    layout = read_layout(tmp_path)
    assert layout.kind == "split_folders" and layout.class_names == ["a", "b"]
    assert {example.file: example.split for example in layout.examples}["val/b/3.png"] == "val"
    (tmp_path / "test").rename(tmp_path / "other")
    assert read_layout(tmp_path).kind == "class_folders"  # "train" and "other" are then class names
    shutil.rmtree(tmp_path / "other")  # train/ and val/ only
    with pytest.raises(LayoutError, match="need both train/ and test/"):
        read_layout(tmp_path)


def test_files_beside_the_class_folders_that_are_not_images_are_skipped_but_an_image_there_is_an_error(tmp_path):
    touch(tmp_path, "a/1.png", "b/1.png", "LICENSE.txt", "README", "notes.txt")
    layout = read_layout(tmp_path)
    assert layout.class_names == ["a", "b"] and len(layout.examples) == 2
    assert layout.beside_folders == ["LICENSE.txt", "README", "notes.txt"]
    touch(tmp_path, "stray.png")
    with pytest.raises(LayoutError, match="images beside the folders, in no class: stray.png"):
        read_layout(tmp_path)
    (tmp_path / "a").rename(tmp_path / "train")
    (tmp_path / "b").rename(tmp_path / "test")
    with pytest.raises(LayoutError, match="stray.png"):
        read_layout(tmp_path)
    (tmp_path / "stray.png").unlink()
    shutil.rmtree(tmp_path / "train")
    shutil.rmtree(tmp_path / "test")
    with pytest.raises(LayoutError, match="loose files.*LICENSE.txt"):  # no folders at all: nothing to read
        read_layout(tmp_path)


def test_labels_file_must_cover_every_image_exactly(tmp_path):
    touch(tmp_path, "x 1.png", "sub/y.png", "z.png")
    (tmp_path / "labels.txt").write_text("x 1.png cat\nsub/y.png dog\nmissing.png dog\n")
    with pytest.raises(
        LayoutError, match=r"1 listed file\(s\) not found.*missing.png.*1 file\(s\) without a label.*z.png"
    ):
        read_layout(tmp_path)
    (tmp_path / "labels.txt").write_text("x 1.png cat\nsub/y.png dog\nz.png dog\n")
    layout = read_layout(tmp_path)
    assert [(example.file, example.class_name) for example in layout.examples] == [
        ("sub/y.png", "dog"),
        ("x 1.png", "cat"),
        ("z.png", "dog"),
    ]
    (tmp_path / "labels.csv").write_text("file,label\n")
    with pytest.raises(LayoutError, match="both"):
        read_layout(tmp_path)


def test_symlinks_outside_the_raw_folder_and_symlinked_folders_become_problems(tmp_path):
    raw, outside = tmp_path / "raw", tmp_path / "outside"
    touch(raw, "a/1.png", "b/1.png")
    touch(outside, "secret.png", "folder/2.png")
    (raw / "a/link.png").symlink_to(outside / "secret.png")
    (raw / "a/inside.png").symlink_to(raw / "b/1.png")
    (raw / "b/folder").symlink_to(outside / "folder")
    problems = {example.file: example.problem for example in read_layout(raw).examples}
    assert "symlink leading outside" in problems["a/link.png"]
    assert problems["a/inside.png"] is None  # inside data/raw: followed
    assert "symlink leading outside" in problems["b/folder"]
    (raw / "b/inner").symlink_to(raw / "a", target_is_directory=True)
    assert "a symlink to a folder" in {e.file: e.problem for e in read_layout(raw).examples}["b/inner"]


def test_integer_labels_out_of_range_are_rejected_naming_the_file(tmp_path):
    touch(tmp_path, "a.png", "b.png", "c.png")
    (tmp_path / "labels.txt").write_text("a.png 0\nb.png 1\nc.png -1\n")
    with pytest.raises(LayoutError, match=r"negative label\(s\): c.png \(-1\)"):
        read_layout(tmp_path)
    # With classes 0 and 1, a label 3 (= num_classes + 1) leaves id 2 empty: out of range.
    (tmp_path / "labels.txt").write_text("a.png 0\nb.png 1\nc.png 3\n")
    with pytest.raises(LayoutError, match=r"no example of class id\(s\) \[2\]"):
        read_layout(tmp_path)


def test_a_symlinked_split_folder_is_an_error_naming_it(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "cat").mkdir(parents=True)
    (elsewhere / "cat/1.png").write_bytes(b"x")
    raw = tmp_path / "raw"
    (raw / "test/cat").mkdir(parents=True)
    (raw / "test/cat/2.png").write_bytes(b"y")
    (raw / "train").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(LayoutError, match="train: a symlinked split folder .*not followed"):
        read_layout(raw)
