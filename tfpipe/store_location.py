"""Keeps a local MLflow store's artifacts inside the store: reads and rewrites the paths its SQLite database records.

MLflow records artifact places as absolute paths: each experiment's location, each run's artifact URI, each model
version's source and storage location, each logged model's location. A copy of a project (tar, rsync, cp -r, a
second checkout given a copy of mlruns/) would so log its models, TensorBoard events and pictures into the
original's mlruns/, and read the original's champion. Opening the store (tracking.configure) therefore moves every
path recorded under another store's folder to the same place in this one: artifacts are kept relative to the store.
A store reached through a symlink (two checkouts sharing one mlruns/) is the same store, and is left as it is.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

# Where MLflow's tables hold artifact places (a table or column this MLflow does not have is skipped).
COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
)


def other_roots(connection: sqlite3.Connection, store: Path) -> list[Path]:
    """The store folders, other than `store`, under which this database's experiments keep their artifacts: ours
    are at <store>/artifacts/<experiment name> (tfpipe.tracking.configure)."""
    roots = set()
    for name, location in connection.execute("SELECT name, artifact_location FROM experiments"):
        path = _local_path(location)
        if path is not None and path.name == name and path.parent.name == "artifacts":
            root = path.parent.parent
            if _resolved(root) != store:
                roots.add(root)
    return sorted(roots)


def keep_in_store(database: Path) -> list[Path]:
    """Rewrites every artifact place the store at `database` (its mlflow.db) records under another store's folder
    to the same place under this one, in one transaction; returns the folders moved from (none: nothing written)."""
    store = _resolved(database.parent)
    if not database.is_file():
        return []
    with sqlite3.connect(database, timeout=60) as connection:
        connection.execute("BEGIN IMMEDIATE")  # one writer: two stages opening a copied store move it once
        roots = other_roots(connection, store)
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for root in roots:
            for old, new in ((root.as_uri(), store.as_uri()), (str(root), str(store))):  # file:// URIs, plain paths
                for table, column in COLUMNS:
                    if table in tables and column in _columns(connection, table):
                        connection.execute(
                            f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '  # noqa: S608  names above
                            f'WHERE "{column}" = ? OR substr("{column}", 1, ?) = ?',
                            (new, len(old) + 1, old, len(old) + 1, old + "/"),
                        )
    for root in roots:
        print(f"MLflow store {database}: the artifact paths it recorded under {root} now point into {store}")
    return roots


def _columns(connection: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')}


def _local_path(location: str | None) -> Path | None:
    """The local path of an artifact location (file:// URI or plain absolute path), else None (a server's)."""
    from urllib.parse import unquote, urlparse

    if not location:
        return None
    if location.startswith("file://"):
        return Path(unquote(urlparse(location).path))
    return Path(location) if location.startswith("/") else None


def _resolved(path: Path) -> Path:
    return Path(path).resolve()
