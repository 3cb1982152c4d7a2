"""The data kinds, in one table: what data/raw holds for each, how it is recognized, and the tasks it allows. No stage
code here: each stage finds its kind's code in its own `kinds/` table (components/<stage>/kinds/__init__.py), keyed by
these names. Reads the listing of data/raw, writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tfpipe.tables import table_format


@dataclass(frozen=True)
class Kind:
    name: str
    holds: str  # what data/raw holds, in words (the error for data that is no kind quotes it)
    tasks: tuple[str, ...]  # the first is the default
    recognizes: Callable[[list[Path]], bool]  # from the visible files at the top of data/raw


def _visible(raw_dir: Path) -> list[Path]:
    if not raw_dir.is_dir():
        return []
    return sorted(path for path in raw_dir.iterdir() if not path.name.startswith("."))


def _one_table(entries: list[Path]) -> bool:
    return len(entries) == 1 and entries[0].is_file() and table_format(entries[0]) is not None


def _sample_files(entries: list[Path], count: int = 20) -> list[Path]:
    """Up to `count` visible files below the folders of data/raw, in a fixed order."""
    import os

    found = []
    for folder in (entry for entry in entries if entry.is_dir()):
        for current, directories, names in os.walk(folder):
            directories[:] = sorted(name for name in directories if not name.startswith("."))
            found += [Path(current) / name for name in sorted(names) if not name.startswith(".")]
            if len(found) >= count:
                return found[:count]
    return found


def _text_folders(entries: list[Path]) -> bool:
    """Folders whose files are documents: most of a sample has a text extension (or none) and reads as text."""
    from tfpipe.texts import TEXT_SUFFIXES, looks_like_text

    sample = _sample_files(entries)
    if not sample:
        return False

    def head(path: Path) -> bytes:
        with path.open("rb") as stream:
            return stream.read(4096)

    documents = sum(
        path.suffix.lower() in TEXT_SUFFIXES and path.is_file() and looks_like_text(head(path)) for path in sample
    )
    return documents > len(sample) / 2


def _image_layout(entries: list[Path]) -> bool:
    """Class or split folders, or images beside a labels file (components/ingest/layout.py)."""
    from tfpipe.images import is_image_name

    return any(path.is_dir() or is_image_name(path.name) for path in entries)


KINDS = {
    kind.name: kind
    for kind in (
        Kind(
            "table",
            "one CSV, TSV, JSON-lines or Parquet file (and data.target, its column to predict)",
            ("classification", "regression"),
            _one_table,
        ),
        Kind(
            "text",
            "class folders of documents (<class>/<file>.txt, train|test/<class>/...), or a table with a free-text "
            "column (data.kind: text)",
            ("classification",),
            _text_folders,
        ),
        Kind(
            "image",
            "class folders of images (<class>/<file>, train|test/<class>/<file>, or a labels file)",
            ("classification",),
            _image_layout,
        ),
    )
}


class UnknownKind(ValueError):
    """data/raw holds no kind of data tfpipe reads."""


def recognize(raw_dir: Path, declared: str = "auto") -> str:
    """The kind of data/raw: data.kind when it is set, else the first kind in KINDS that recognizes it. An image
    folder may hold loose files beside its class folders (a README, labels.csv): image is recognized by its folders,
    after a table, which is one file alone."""
    if declared != "auto":
        return declared
    entries = _visible(raw_dir)
    for kind in KINDS.values():
        if kind.recognizes(entries):
            return kind.name
    if not entries:
        return "image"  # an empty data/raw: the image layout's own error says what belongs there
    listed = ", ".join(path.name for path in entries[:5])
    raise UnknownKind(
        f"{raw_dir} holds {listed}{', ...' if len(entries) > 5 else ''}: no kind of data tfpipe reads. "
        + "; ".join(f"{'an' if kind.name[0] in 'aeiou' else 'a'} {kind.name}: {kind.holds}" for kind in KINDS.values())
    )


def find_table(raw_dir: Path) -> Path:
    """The one table file of data/raw (for the table kind)."""
    entries = _visible(raw_dir)
    if not _one_table(entries):
        listed = ", ".join(path.name for path in entries[:5]) or "nothing"
        raise UnknownKind(f"{raw_dir} should hold one table file for the table kind; it holds {listed}")
    return entries[0]


def kind_of_prepared(manifest: dict) -> str:
    """The kind ingest recorded in data/prepared/manifest.json (manifests written before kinds are images)."""
    return manifest.get("kind", "image")
