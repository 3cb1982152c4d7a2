"""Writes a dataset into data/raw all at once and only over what may go: the files are staged beside data/raw and
swapped in, a file is replaced or removed only if this command wrote it (its record under .cache/materialize/) or
DVC can restore it (data.dvc's listing in the DVC cache), and every name is checked before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from tfpipe import paths
from tfpipe.outputs import TEMPORARY_MARK, exchange, write_json

DATA_DVC = Path("data.dvc")  # data/raw's DVC file (a root-level one naming the path, as `dvc add` would)
RECORD_DIR = paths.CACHE / "materialize"  # per raw folder, the files this command wrote: {relative path: sha256}


LISTED_FILES = 10  # files named in the error that stops a command before it overwrites or removes them


class ForeignFilesError(ValueError):
    """data/raw holds files this command did not write and DVC cannot restore: nothing was changed."""


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def record_path(raw_dir: Path) -> Path:
    return RECORD_DIR / f"{raw_dir.as_posix().strip('/').replace('/', '_') or 'root'}.json"


def read_record(raw_dir: Path) -> dict[str, str]:
    path = record_path(raw_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def dvc_restorable(raw_dir: Path, data_dvc: Path = DATA_DVC) -> dict[str, str]:
    """{relative path: md5} of the files `dvc checkout` can restore into raw_dir (data.dvc's listing in the cache,
    wherever the project's DVC cache is: `dvc cache dir` may have moved it)."""
    if not data_dvc.is_file():
        return {}
    outs = (yaml.safe_load(data_dvc.read_text()) or {}).get("outs") or [{}]
    digest = str(outs[0].get("md5", ""))
    if Path(outs[0].get("path", "")) != raw_dir or not digest.endswith(".dir"):
        return {}
    from dvc.repo import Repo

    try:
        with Repo(str(data_dvc.resolve().parent)) as repo:
            cache = Path(repo.cache.local.path)
    except Exception:  # noqa: BLE001  no DVC repository here: nothing it could restore
        return {}
    listing = cache / digest[:2] / digest[2:]
    if not listing.is_file():
        return {}
    return {entry["relpath"]: entry["md5"] for entry in json.loads(listing.read_text())}


def existing_files(raw_dir: Path) -> list[Path]:
    """Every file and symlink below raw_dir (symlinked folders are not followed)."""
    found = []
    for current, directories, names in os.walk(raw_dir):
        found += [Path(current) / name for name in names]
        found += [Path(current) / name for name in directories if (Path(current) / name).is_symlink()]
    return sorted(found)


def replaceable(path: Path, relative: str, record: dict[str, str], restorable: dict[str, str]) -> bool:
    """A file this command may overwrite or remove: it wrote it (unchanged since), or DVC can restore it."""
    if path.is_symlink() or not path.is_file():
        return False
    if relative not in record and relative not in restorable:
        return False
    content = path.read_bytes()
    return record.get(relative) == _sha256(content) or restorable.get(relative) == hashlib.md5(content).hexdigest()


def check_no_foreign_files(raw_dir: Path, expected: dict[str, bytes] | None, source: str) -> None:
    """Raises ForeignFilesError, before anything is written, if raw_dir holds a file the command would
    overwrite or remove that it did not write and DVC cannot restore. `expected` is the dataset's files
    when known upfront (a file already identical is kept); None (tfds) treats every such file as in the way."""
    if not raw_dir.is_dir():
        return
    record, restorable = read_record(raw_dir), dvc_restorable(raw_dir)
    foreign = []
    for path in existing_files(raw_dir):
        relative = path.relative_to(raw_dir).as_posix()
        if TEMPORARY_MARK in path.name and path.name.startswith("."):
            path.unlink()  # a killed run's temporary file (write_bytes): ours
            continue
        if (
            expected is not None
            and relative in expected
            and path.is_file()
            and not path.is_symlink()
            and path.read_bytes() == expected[relative]
        ):
            continue
        if not replaceable(path, relative, record, restorable):
            foreign.append(relative)
    if foreign:
        listed = "\n".join(f"  {raw_dir / name}" for name in foreign[:LISTED_FILES])
        more = f"\n  ... and {len(foreign) - LISTED_FILES} more" if len(foreign) > LISTED_FILES else ""
        raise ForeignFilesError(
            f"{raw_dir} holds {len(foreign)} file(s) that materializing {source} would overwrite or remove, "
            "which this command did not write and DVC cannot restore:\n"
            f"{listed}{more}\nNothing was changed. To use the files in {raw_dir} as the "
            f"dataset: `python -m pipelines.materialize --source folder` (and set data.source: folder in params.yaml); "
            f"to materialize {source}, move them out of {raw_dir} first."
        )


MAX_NAME_BYTES = 255  # one path component, as Linux, macOS and Windows file systems allow


MAX_PATH_BYTES = 4000  # a whole path (Linux PATH_MAX is 4096, with room for the project's own prefix)


def check_relative_path(relative: str, raw_dir: Path) -> None:
    """A dataset file's path below raw_dir must be one this machine can write: relative, no `..`, no component
    over MAX_NAME_BYTES bytes; ValueError naming it otherwise (checked before the file is written)."""
    parts = relative.split("/")
    if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{relative!r}: not a plain relative path below {raw_dir}")
    if too_long := [part for part in parts if len(os.fsencode(part)) > MAX_NAME_BYTES]:
        raise ValueError(
            f"{relative}: the name {too_long[0][:60]}... is {len(os.fsencode(too_long[0]))} bytes, more than the "
            f"{MAX_NAME_BYTES} a file system allows; rename it (nothing was changed)"
        )
    if len(os.fsencode(str(raw_dir.resolve() / relative))) > MAX_PATH_BYTES:
        raise ValueError(
            f"{relative}: the path is longer than {MAX_PATH_BYTES} bytes; shorten it (nothing was changed)"
        )


def staging_folders(raw_dir: Path) -> list[Path]:
    """Staging folders a killed run of this command left beside raw_dir (`.<name>.tmp-*`): ours by their name."""
    if not raw_dir.parent.is_dir():
        return []
    return sorted(raw_dir.parent.glob(f".{raw_dir.name}{TEMPORARY_MARK}*"))


def sweep_staging(raw_dir: Path) -> None:
    for folder in staging_folders(raw_dir):
        print(f"removing {folder}: left by a killed run of this command")
        shutil.rmtree(folder, ignore_errors=True)


def same_files(raw_dir: Path, expected: Mapping[str, bytes]) -> bool:
    """True when raw_dir holds exactly these files with these contents (nothing to do)."""
    if not raw_dir.is_dir():
        return False
    present = {path.relative_to(raw_dir).as_posix(): path for path in existing_files(raw_dir)}
    return present.keys() == set(expected) and all(
        path.is_file() and not path.is_symlink() and path.read_bytes() == expected[name]
        for name, path in present.items()
    )


@dataclass
class Staged:
    """The dataset written into a staging folder beside raw_dir, to be swapped in (None: raw_dir already is it)."""

    folder: Path | None
    files: dict[str, str]  # relative path -> sha256 of the content: the record of what this command wrote
    written: int


def stage_files(
    files: Iterable[tuple[str, bytes]],
    raw_dir: Path,
    expected: Mapping[str, bytes] | None = None,
    source: str = "the dataset",
) -> Staged:
    """Writes (relative path, content) pairs into a new staging folder beside raw_dir; raw_dir is not touched.

    Every file the swap would overwrite or remove is checked first (check_no_foreign_files): only files this
    command wrote or DVC can restore may go. An error of any kind (a name too long, a read error, Ctrl-C) removes
    the staging folder and leaves raw_dir as it was.
    """
    check_no_foreign_files(raw_dir, expected, source)
    if expected is not None and same_files(raw_dir, expected):
        return Staged(None, {name: _sha256(expected[name]) for name in expected}, 0)
    raw_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{raw_dir.name}{TEMPORARY_MARK}", dir=raw_dir.parent))
    staging.chmod(0o755)
    written: dict[str, str] = {}
    try:
        for relative, content in files:
            check_relative_path(relative, raw_dir)
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            written[relative] = _sha256(content)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Staged(staging, written, len(written))


def swap_in(staged: Staged, raw_dir: Path) -> None:
    """Puts the staged folder in raw_dir's place in one rename; the previous raw_dir waits at the staging path."""
    if staged.folder is None:
        return
    if raw_dir.exists():
        if not exchange(staged.folder, raw_dir):  # no atomic exchange here: two renames
            previous = staged.folder.with_name(staged.folder.name + "-previous")
            os.replace(raw_dir, previous)
            os.replace(staged.folder, raw_dir)
            os.replace(previous, staged.folder)
    else:
        os.replace(staged.folder, raw_dir)
        staged.folder.mkdir()


def swap_back(staged: Staged, raw_dir: Path) -> None:
    """Undoes swap_in: the previous raw_dir back in place, the new data removed."""
    if staged.folder is None:
        return
    if any(staged.folder.iterdir()) or raw_dir.exists():
        if not exchange(staged.folder, raw_dir):
            previous = staged.folder.with_name(staged.folder.name + "-new")
            os.replace(raw_dir, previous)
            os.replace(staged.folder, raw_dir)
            os.replace(previous, staged.folder)
    shutil.rmtree(staged.folder, ignore_errors=True)
    if raw_dir.is_dir() and not any(raw_dir.iterdir()):
        raw_dir.rmdir()  # there was no raw_dir before


def finish(staged: Staged, raw_dir: Path) -> None:
    """After a successful swap: the previous raw_dir removed (checked: only our or DVC-restorable files), the
    record of what this command wrote updated."""
    if staged.folder is not None:
        shutil.rmtree(staged.folder, ignore_errors=True)
    if staged.folder is not None or staged.files:  # `--source folder` alone tracks the user's files: not ours
        write_json(record_path(raw_dir), staged.files)


def write_files(
    files: Iterable[tuple[str, bytes]],
    raw_dir: Path,
    expected: Mapping[str, bytes] | None = None,
    source: str = "the dataset",
) -> tuple[int, int]:
    """Stages the files and swaps them in for raw_dir (no DVC, no params): (files, written; 0 when unchanged)."""
    staged = stage_files(files, raw_dir, expected, source)
    swap_in(staged, raw_dir)
    finish(staged, raw_dir)
    return len(staged.files), staged.written
