"""Reads the data/raw folder layout (class folders, split folders or a labels file); writes nothing.

Three layouts, told apart by what sits at the top of data/raw:

- `<class>/<image>`: class folders; ingest splits them (stratified, seeded).
- `train/<class>/<image>`, `test/<class>/<image>`, optionally `val/<class>/<image>`: given splits,
  kept as they are (without val/, ingest carves val out of train).
- images anywhere below data/raw plus `labels.csv` (a `file,label` header, then one row per image)
  or `labels.txt` (one `file label` line per image, the file name may contain spaces): every image
  must be listed and every listed file must exist.

An optional `classes.txt` (one class name a line) fixes the class set and the label ids in that order; otherwise
class names are sorted, numerically when all of them are integers. Hidden files and folders (a leading dot, e.g.
.DS_Store) and files beside the folders that are not images (a README, LICENSE.txt) are skipped and counted; an image
there, in no class, is an error. A symlink to a file inside data/raw is followed; one to a folder or leading outside
data/raw becomes an example with a `problem`, which the validation suite reports by name. An empty class folder is a
class with 0 examples, which the suite's per-class count fails; so does a single class.
"""

from __future__ import annotations

import csv
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from components.ingest.class_names import CLASSES_FILE, LayoutError, check_class_names, sort_class_names
from tfpipe.images import is_image_name
from tfpipe.records import SPLITS

LABEL_FILES = ("labels.csv", "labels.txt")


@dataclass(frozen=True)
class RawExample:
    path: Path  # on disk
    file: str  # relative to data/raw, with "/" separators: what reports and shards name
    class_name: str
    split: str | None  # given by the layout, or None when ingest assigns it
    problem: str | None = None  # why this file cannot be read, e.g. a symlink leading outside data/raw


@dataclass(frozen=True)
class RawLayout:
    kind: str  # "class_folders" | "split_folders" | "labels_file"
    class_names: list[str]
    examples: list[RawExample]  # sorted by file
    hidden: list[str]  # files skipped by the dot rule (a leading dot, `.DS_Store`, `...`), relative to data/raw
    beside_folders: list[str] = field(default_factory=list)  # non-images beside the folders (a README): skipped

    @property
    def hidden_files(self) -> int:
        return len(self.hidden)


def hidden_files_below(folder: Path) -> list[Path]:
    """Every file below a hidden folder (it is skipped whole)."""
    return [Path(current) / name for current, _, names in os.walk(folder) for name in names]


def file_problem(path: Path, root: Path) -> str | None:
    """Why a non-hidden entry below root cannot be read as a file of the dataset, or None. Symlinks to a file
    inside root are followed; everything else that is not a regular file is named, never read (a FIFO would
    block the read forever)."""
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except RuntimeError:  # Python raises it for a loop
            return f"a symlink loop ({os.readlink(path)})"
        except OSError:
            return f"a broken symlink ({os.readlink(path)})"
        if not target.is_relative_to(root.resolve()):
            return f"a symlink leading outside {root} ({os.readlink(path)})"
        if target.is_dir():
            return f"a symlink to a folder ({os.readlink(path)}); not followed"
    mode = path.lstat().st_mode if not path.is_symlink() else path.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = "named pipe (FIFO)" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device or special"
        return f"a {kind} file, not a regular file; not read"
    return None


def is_folder(entry: os.DirEntry) -> bool:
    """A folder or a symlink to one (a symlink loop or a broken one is not: file_problem names it)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def list_files(folder: Path, root: Path) -> tuple[list[Path], dict[Path, str], list[Path]]:
    """Non-hidden files below folder (sorted), the entries that cannot be read with why (symlinks not followed,
    special files), and the hidden files skipped (below a hidden folder too).

    A regular file is known as one from its directory entry, without a system call; only the other entries (symlinks,
    special files) are looked at one by one (file_problem): 30,000 files take a tenth of the time they took."""
    files, problems, hidden = [], {}, []
    pending = [folder]
    while pending:
        current = pending.pop()
        with os.scandir(current) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            path = None if entry.is_file(follow_symlinks=False) else current / entry.name
            if path is not None and is_folder(entry):  # a folder, or a symlink to one
                if entry.name.startswith("."):
                    hidden += hidden_files_below(current / entry.name)
                elif entry.is_symlink():  # not followed: say so
                    problems[path] = file_problem(path, root) or "a symlinked folder; not followed"
                else:
                    pending.append(path)
            elif entry.name.startswith("."):
                hidden.append(current / entry.name)
            elif path is None:  # a regular file: the common case, known without a system call
                files.append(entry.path)
            elif problem := file_problem(path, root):
                problems[path] = problem
            else:  # a symlink to a file inside root
                files.append(entry.path)
    # the order Path objects sort in (component by component), without building them to sort
    return [Path(path) for path in sorted(files, key=lambda path: path.split(os.sep))], problems, sorted(hidden)


def relative_file(path: Path, root: Path) -> str:
    """`path` relative to `root` with "/" separators, as reports and shards name it (path is below root)."""
    text, prefix = str(path), str(root) + os.sep
    return text[len(prefix) :].replace(os.sep, "/") if text.startswith(prefix) else path.relative_to(root).as_posix()


def read_class_folders(folders: list[Path], root: Path, split: str | None) -> tuple[list[RawExample], int]:
    examples, hidden = [], []
    for folder in folders:
        if folder.is_symlink():
            examples.append(
                RawExample(
                    folder,
                    folder.relative_to(root).as_posix(),
                    folder.name,
                    split,
                    f"a symlinked class folder ({os.readlink(folder)}); not followed",
                )
            )
            continue
        files, problems, skipped = list_files(folder, root)
        hidden += skipped
        examples += [RawExample(path, relative_file(path, root), folder.name, split) for path in files]
        examples += [
            RawExample(path, path.relative_to(root).as_posix(), folder.name, split, problem)
            for path, problem in problems.items()
        ]
    return examples, hidden


def check_numeric_labels(listing: Path, rows: list[tuple[str, str]]) -> None:
    """Integer labels are class ids: they must be 0..K-1 with none missing, so -1 or K is an error.

    (Checked here, on the CPU, before any tensor exists: an out-of-range label gives NaN on a GPU.)
    """
    labels = [label for _, label in rows]
    if not labels or not all(label.lstrip("-").isdecimal() for label in labels):
        return  # class names, not ids
    ids = sorted({int(label) for label in labels})
    negative = [f"{file} ({label})" for file, label in rows if int(label) < 0]
    gaps = sorted(set(range(ids[-1] + 1)) - set(ids)) if ids[-1] >= 0 else []
    if negative or gaps:
        problems = ([f"negative label(s): {', '.join(negative[:5])}"] if negative else []) + (
            [f"no example of class id(s) {gaps[:10]} although higher ids exist: ids must be 0..K-1"] if gaps else []
        )
        raise LayoutError(f"{listing}: integer labels are class ids 0..K-1; " + "; ".join(problems))


def read_labels_file(raw_dir: Path, listing: Path) -> tuple[list[RawExample], int]:
    """`file,label` CSV rows or `file label` text lines; every image must be listed exactly once."""
    with listing.open(encoding="utf-8", newline="") as stream:
        if listing.suffix == ".csv":
            reader = csv.DictReader(stream)
            if reader.fieldnames is None or not {"file", "label"} <= set(reader.fieldnames):
                raise LayoutError(f"{listing}: expected a header with the columns file,label; got {reader.fieldnames}")
            rows = [(row["file"].strip(), (row["label"] or "").strip()) for row in reader]
        else:
            rows = [tuple(line.strip().rsplit(None, 1)) for line in stream if line.strip()]
    if bad := [" ".join(row) for row in rows if len(row) != 2 or not all(row)]:
        raise LayoutError(f"{listing}: {len(bad)} line(s) without both a file and a label, e.g. {bad[:3]}")
    check_numeric_labels(listing, rows)
    files, problems, hidden = list_files(raw_dir, raw_dir)
    on_disk = {
        path.relative_to(raw_dir).as_posix(): path
        for path in [*files, *problems]
        if path.parent != raw_dir or path.name not in (CLASSES_FILE, *LABEL_FILES)
    }
    listed = [file for file, _ in rows]
    errors = []
    if duplicates := sorted(file for file, count in Counter(listed).items() if count > 1):
        errors.append(f"listed more than once: {', '.join(duplicates[:5])}")
    if missing := sorted(set(listed) - on_disk.keys()):
        errors.append(f"{len(missing)} listed file(s) not found, e.g. {', '.join(missing[:5])}")
    if unlisted := sorted(on_disk.keys() - set(listed)):
        errors.append(f"{len(unlisted)} file(s) without a label, e.g. {', '.join(unlisted[:5])}")
    if errors:
        raise LayoutError(f"{listing}: " + "; ".join(errors))
    examples = [
        RawExample(on_disk[file], file, label, None, problems.get(on_disk[file])) for file, label in sorted(rows)
    ]
    return examples, hidden


def read_layout(raw_dir: Path) -> RawLayout:
    """Finds the layout of raw_dir and every example in it; raises LayoutError naming what is wrong."""
    if not raw_dir.is_dir():
        raise LayoutError(
            f"{raw_dir}: raw data folder not found (materialize the data first: python -m pipelines.materialize)"
        )
    entries = sorted(entry for entry in raw_dir.iterdir() if not entry.name.startswith("."))
    # Hidden entries at the top too (`.git`, a folder named `...`): skipped, counted and listed like any other.
    hidden_at_top = []
    for entry in sorted(raw_dir.iterdir()):
        if entry.name.startswith(".") and entry.name not in (CLASSES_FILE, *LABEL_FILES):
            hidden_at_top += hidden_files_below(entry) if entry.is_dir() and not entry.is_symlink() else [entry]
    folders = [entry for entry in entries if entry.is_dir()]
    loose = [entry for entry in entries if not entry.is_dir() and entry.name != CLASSES_FILE]
    listings = [entry for entry in loose if entry.name in LABEL_FILES]
    if len(listings) > 1:
        raise LayoutError(f"{raw_dir}: both {' and '.join(p.name for p in listings)}; keep one")
    if listings:
        kind = "labels_file"
        examples, hidden = read_labels_file(raw_dir, listings[0])  # its walk covers the top level
    elif loose and (not folders or any(is_image_name(entry.name) for entry in loose)):
        stray = [entry.name for entry in loose if is_image_name(entry.name)] if folders else list(map(str, loose))
        raise LayoutError(
            f"{raw_dir}: expected <class>/<image> or <split>/<class>/<image> folders, or a labels.csv/labels.txt; "
            f"found {'images beside the folders, in no class' if folders else 'loose files'}: {', '.join(stray)}"
        )
    elif folders and {folder.name for folder in folders} <= set(SPLITS) and "train" in {f.name for f in folders}:
        kind, examples, hidden = "split_folders", [], list(hidden_at_top)
        if "test" not in {folder.name for folder in folders}:
            raise LayoutError(f"{raw_dir}: given splits need both train/ and test/ (val/ is optional)")
        if linked := [folder for folder in folders if folder.is_symlink()]:
            raise LayoutError(
                "; ".join(
                    f"{folder}: a symlinked split folder ({os.readlink(folder)}); not followed" for folder in linked
                )
                + ": copy the images in with `python -m pipelines.materialize --source folder --from <folder>`"
            )
        for split_dir in folders:
            if stray := [str(p) for p in split_dir.iterdir() if not p.name.startswith(".") and not p.is_dir()]:
                raise LayoutError(f"{split_dir}: expected only <class> folders, found files: {', '.join(stray[:5])}")
            found, skipped = read_class_folders(
                sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                raw_dir,
                split_dir.name,
            )
            examples += found
            hidden += skipped
    else:
        kind = "class_folders"
        examples, hidden = read_class_folders(folders, raw_dir, None)
        hidden += hidden_at_top
    names = {example.class_name for example in examples}
    if kind == "class_folders":  # an empty class folder is still a class: the suite reports its 0 examples
        names |= {folder.name for folder in folders}
    elif kind == "split_folders":
        names |= {
            p.name for split_dir in folders for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        }
    check_class_names(names, raw_dir)
    class_names = sort_class_names(names, raw_dir)
    hidden_names = sorted({path.relative_to(raw_dir).as_posix() for path in hidden})
    beside = [entry.name for entry in loose] if kind != "labels_file" else []
    return RawLayout(kind, class_names, sorted(examples, key=lambda example: example.file), hidden_names, beside)
