"""Content keys for state reused across runs: file trees, params, and the project code a stage imports.

Anything kept between runs (training backups, checkpoints, tf.data cache files) is keyed on what
produced it, so a change of data, params or code never resumes or reuses stale state. The same
import closure tells which modules each stage's `dvc.yaml` entry must list as dependencies
(tests/test_lineage.py checks it).
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("components", "pipelines", "models", "tfpipe")  # the project's own code; the rest is pinned dependencies


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """components.train.stage -> <root>/components/train/stage.py; a package -> its __init__.py; None if not project
    code."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` anywhere in the file may load (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pipelines import records`
    return names


def import_closure(module: str, root: Path = ROOT) -> list[Path]:
    """The project files loaded by importing `module`, its imports' imports and their packages' __init__.py."""
    seen: dict[str, Path] = {}
    pending = [module]
    if (root.joinpath(*module.split(".")) / "__main__.py").is_file():  # `python -m package` runs its __main__
        pending.append(f"{module}.__main__")
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            prefix = ".".join(parts[:depth])
            path = module_file(prefix, root)
            if path is not None and prefix not in seen:
                seen[prefix] = path
                pending.extend(imported_names(path))
    return sorted(path.relative_to(root) for path in set(seen.values()))


def tree_digest(path: Path | str) -> str:
    """sha256 over the relative name and content of every file below `path` (or of the file itself)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(item for item in path.rglob("*") if item.is_file()) if path.is_dir() else [path]
    for item in files:
        digest.update(item.relative_to(path).as_posix().encode() if path.is_dir() else item.name.encode())
        digest.update(b"\0")
        with item.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def code_digest(module: str, root: Path = ROOT) -> str:
    """sha256 of the source of every project file `module` imports (transitively)."""
    return hashlib.sha256(
        json.dumps(
            {str(path): tree_digest(root / path) for path in import_closure(module, root)}, sort_keys=True
        ).encode()
    ).hexdigest()


def content_key(**parts) -> str:
    """A short key for JSON-serializable parts (params, digests): equal parts, equal key."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
