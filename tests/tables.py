"""Messy tables of our own making, as users' files are: mixed types in a column, empty cells written several ways, an
id column, a duplicated row, rows with the same features and another target, dates in a day-first format, a yes/no
column, a constant column, free text, a byte-order mark. The target is learnable from the features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

WORDS = "call about the invoice renewal discount support ticket slow great cancel upgrade price team".split()


def messy_table(rows: int = 240, seed: int = 0, task: str = "classification") -> pd.DataFrame:
    """A customers table as text cells. classification: `churn` (yes/no); regression: `spend` (a positive amount).
    The quirks sit in the first 42 rows: at least 60 rows."""
    if rows < 60:
        raise ValueError(f"a messy table has at least 60 rows, not {rows}")
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, rows)
    income = np.round(rng.lognormal(10.5, 0.4, rows), 2)
    plan = rng.choice(["basic", "pro", "enterprise"], rows, p=[0.5, 0.35, 0.15])
    active = rng.choice(["yes", "no"], rows)
    days = rng.integers(0, 3 * 365, rows)
    signup = pd.to_datetime("2021-01-01") + pd.to_timedelta(days, unit="D")
    # Not linear in the features (a V in age, plan and activity together): a network can beat the linear baseline.
    score = (
        2.0 * (np.abs(age - 48) / 16 - 1)
        + 1.5 * (plan == "basic") * (active == "no")
        - 1.5 * (plan == "enterprise")
        + rng.normal(0, 0.4, rows)
    )
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{index:05d}" for index in range(rows)],
            "signup": signup.strftime("%d/%m/%Y"),
            "age": age.astype(str),
            "income": income.astype(str),
            "plan": plan,
            "active": active,
            "region": "EU",
            "notes": [" ".join(rng.choice(WORDS, rng.integers(6, 12))) for _ in range(rows)],
        }
    )
    if task == "classification":
        frame["churn"] = np.where(score > 0, "yes", "no")
    else:
        spend = 20 + 30 * (plan == "pro") + 80 * (plan == "enterprise") + 0.02 * (age - 48) ** 2
        spend = spend + rng.gamma(2.0, 4.0, rows)
        frame["spend"] = np.round(spend, 2).astype(str)
    frame.loc[3, "age"] = " 41 "  # spaces around a number
    frame.loc[[5, 9, 17], "age"] = "n/a"
    frame.loc[[11, 23], "age"] = "unknown"  # an odd token in a numeric column: the schema lists it as empty
    frame.loc[[7, 8], "income"] = ""
    frame.loc[13, "income"] = "4.2e4"
    frame.loc[[15, 29], "signup"] = "NA"
    frame.loc[21, "plan"] = None
    frame.loc[[31, 33], frame.columns[-1]] = ""  # rows without a target: dropped and counted
    frame.loc[rows - 1] = frame.loc[40]  # a duplicated row, id included
    frame.loc[rows] = frame.loc[41]  # the same features as row 42 with another target
    frame.loc[rows, "customer_id"] = "C99999"
    target = frame.columns[-1]
    frame.loc[rows, target] = (
        ("no" if frame.loc[41, target] == "yes" else "yes") if task == "classification" else "999.5"
    )
    return frame


def write_table(frame: pd.DataFrame, path: Path, bom: bool = True) -> Path:
    """CSV as a spreadsheet program writes it: a byte-order mark, empty cells for None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = frame.to_csv(index=False, lineterminator="\n")
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return path
