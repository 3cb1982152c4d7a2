"""When an exported version becomes the registry's champion, in one place: export (right after it registers a
version) and the promote stage (after `dvc exp apply` of an experiment that ran elsewhere) both ask decide(). Reads
the registry and the DVC environment; move_champion() moves the alias.

A version becomes champion when evaluate blessed it and the int8 gate passed (the export's reasons say otherwise), the
champion evaluate compared it with is still the champion (a candidate is compared on its own test split with the model
it would replace), and it runs in the workspace: a queued or `--temp` experiment registers its version and leaves the
alias to the experiment the user applies (`dvc exp apply <name>`, then `dvc repro`), so the last experiment of a sweep
to finish never wins by finishing last.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tfpipe import tracking

RECHECK = "python -m pipelines.store promote"  # compares with the champion now, promotes if at least as good


@dataclass(frozen=True)
class Decision:
    promote: bool  # the version is (or becomes) the champion
    already: bool  # it was the champion before: nothing to move
    reasons: list[str] = field(default_factory=list)  # why not, each a sentence with what to do
    champion: int | None = None  # the champion's version when decided


def temporary_experiment(cwd: Path | None = None) -> str | None:
    """The DVC experiment's name when this process runs in a temporary copy of the project, else None.

    DVC runs a queued experiment (`dvc exp run --queue`, then `dvc queue start`) and a `dvc exp run --temp` in
    <repo>/.dvc/tmp/exps/<tmp>/ and names it in DVC_EXP_NAME (dvc/repo/experiments/queue/base.py sets DVC_EXP_NAME,
    DVC_EXP_BASELINE_REV and DVC_ROOT, the parent repository, for every queued entry); a workspace `dvc exp run` runs
    in the repository itself, like `dvc repro`, and its results stay there."""
    cwd = (cwd or Path.cwd()).resolve()
    if tracking.project_root(cwd) == cwd:
        return None
    return os.environ.get("DVC_EXP_NAME") or cwd.name


def decide(model_name: str, version: int, reasons: list[str], compared: int | None) -> Decision:
    """Whether `version` of `model_name` becomes the champion. reasons: why the export's gates refused it (empty when
    evaluate blessed it and the int8 gate passed); compared: the champion version evaluate compared it with (None:
    there was none)."""
    champion = tracking.champion_version(model_name)
    now = None if champion is None else int(champion.version)
    if reasons:
        return Decision(False, False, list(reasons), now)
    if now == version:
        return Decision(True, True, [], now)
    if experiment := temporary_experiment():
        return Decision(
            False,
            False,
            [
                f"experiment {experiment} ran in a temporary copy (queued or --temp): its version is registered and "
                f"`champion` is left to the experiment you apply: `dvc exp apply {experiment}`, then `dvc repro`"
            ],
            now,
        )
    if now != compared:
        return Decision(
            False,
            False,
            [
                f"the champion of {model_name!r} changed since evaluate compared against "
                f"{'v' + str(compared) if compared else 'no champion'} (now v{now}): `{RECHECK}` compares version "
                f"{version} with v{now} on this test split and makes it the champion if it is at least as good"
            ],
            now,
        )
    return Decision(True, False, [], now)


def registration(model_name: str, version: int, run_id: str, identity: str | None, blessing: dict, gate: dict) -> dict:
    """artifacts/registration.json, which export writes and the promote stage acts on: the version, the model's
    identity and what the gates decided. Nothing an export-only change alters (no timings; the int8 gate's reasons
    only when it failed), so the promote stage's dependency adds no column to `dvc exp show --only-changed`."""
    return {
        "registered_model": model_name,
        "version": version,
        "run_id": run_id,
        "model_identity": identity,
        "blessed": bool(blessing["blessed"]),
        "int8_gate": {"passed": bool(gate["passed"]), "reasons": [] if gate["passed"] else list(gate["reasons"])},
        "compared_champion": (blessing.get("champion") or {}).get("version"),
    }


def gate_reasons(record: dict) -> list[str]:
    """Why the export's gates refused the model (empty: evaluate blessed it and the int8 gate passed)."""
    reasons = [] if record["blessed"] else ["evaluate did not bless the model"]
    gate = record.get("int8_gate") or {}
    return reasons + ([] if gate.get("passed") else list(gate.get("reasons") or ["the int8 gate did not pass"]))


def move_champion(model_name: str, version: int) -> None:
    import mlflow

    mlflow.MlflowClient().set_registered_model_alias(model_name, tracking.CHAMPION_ALIAS, str(version))
