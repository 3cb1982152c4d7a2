"""Class names: the rule a name (a folder or a label) must keep, and their order (classes.txt, else sorted,
numerically when all are integers); the layout's errors. Reads classes.txt; writes nothing."""

from __future__ import annotations

import unicodedata
from pathlib import Path

CLASSES_FILE = "classes.txt"


class LayoutError(ValueError):
    """data/raw is not one of the supported layouts; the message names the offending paths."""


class ClassNameError(LayoutError):
    """A class name (folder or label) that the rule below refuses; the message names each and the fix."""


# A class name becomes a folder, a label in reports, HTML and MLflow: no path separators or leading dot, no
# characters markup gives a meaning to, no control characters. Letters of any script, digits and spaces are fine.
CLASS_NAME_FORBIDDEN = set('<>&"`\\/')


def class_name_problem(name: str) -> str | None:
    """Why a class name is refused, or None (the rule above)."""
    if not name or len(name) > 100:
        return "1 to 100 characters"
    if name.startswith(".") or name != name.strip():
        return "no leading dot and no leading or trailing space"
    if bad := sorted({char for char in name if char in CLASS_NAME_FORBIDDEN or unicodedata.category(char)[0] == "C"}):
        return f"no {' '.join(repr(char) for char in bad)}"
    return None


def check_class_names(names: set[str], raw_dir: Path) -> None:
    """Raises LayoutError naming every class name (folder or label) that the rule refuses, with the fix."""
    refused = sorted((name, problem) for name in names if (problem := class_name_problem(name)))
    if refused:
        raise ClassNameError(
            f"{raw_dir}: {len(refused)} class name(s) cannot be used: "
            + "; ".join(f"{name!r} ({problem})" for name, problem in refused[:10])
            + ". Rename those folders (or labels): a class name becomes a folder, a label in reports and MLflow"
        )


def sort_class_names(names: set[str], raw_dir: Path) -> list[str]:
    """classes.txt order if present (every class once; one without images has 0 examples), else sorted names."""
    listing = raw_dir / CLASSES_FILE
    if listing.is_file():
        ordered = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(set(ordered)) != len(ordered) or not names <= set(ordered):
            raise LayoutError(
                f"{listing}: must list each class exactly once; lists {ordered}, "
                f"not listed: {sorted(names - set(ordered))}"
            )
        return ordered
    if all(name.isdecimal() for name in names):
        return sorted(names, key=int)
    return sorted(names)
