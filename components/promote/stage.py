"""Reads artifacts/registration.json (what export registered) and the model registry; moves the `champion` alias; writes
artifacts/promotion.json (what it decided, with this checkout's registry: an output DVC keeps out of git and out of
its cache).

Export registers its version and, in the workspace, makes it the champion when it may (tfpipe/promotion.py): this
stage then only confirms it. What this stage is for: a queued or `--temp` experiment's export registers its version
and leaves the alias to the experiment the user applies. `dvc exp apply <name>` brings that export into the
workspace, and the next `dvc repro` runs this stage (its decision file is this checkout's own, so it differs from the
one the experiment wrote in its temporary copy), which promotes the applied export by the same rule export uses: it
passed its gates and the champion it was compared with is still the champion.
"""

from __future__ import annotations

import json
import sys

from tfpipe import model_trust, paths, promotion, timing, tracking
from tfpipe.outputs import write_json
from tfpipe.redaction import redact


def not_registered_here(model_name: str, version: int, identity: str | None) -> str | None:
    """Why the registry does not hold the exported model as that version (an export made against another store), or
    None when it does."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        registered = mlflow.MlflowClient().get_model_version(model_name, str(version))
    except MlflowException:
        return f"{model_name} version {version} is not in the registry at {redact(mlflow.get_tracking_uri())}"
    if identity and registered.tags.get(model_trust.IDENTITY_TAG) != identity:
        return f"{model_name} version {version} in the registry at {redact(mlflow.get_tracking_uri())} is another model"
    return None


def decide(record: dict) -> tuple[promotion.Decision, str]:
    """(the decision, what happened, in words)."""
    model_name, version = record["registered_model"], int(record["version"])
    missing = not_registered_here(model_name, version, record.get("model_identity"))
    if missing:
        return promotion.Decision(False, False, [f"{missing}: nothing to promote"]), "not promoted"
    decision = promotion.decide(model_name, version, promotion.gate_reasons(record), record.get("compared_champion"))
    if decision.promote and not decision.already:
        promotion.move_champion(model_name, version)
        return decision, "now the champion"
    if decision.already:
        return decision, "the champion"
    return decision, "deferred" if promotion.temporary_experiment() else "not promoted"


def main() -> None:
    timing.start()
    if not paths.REGISTRATION.is_file():
        raise SystemExit(f"{paths.REGISTRATION} is missing: run the export stage first (dvc repro export)")
    record = json.loads(paths.REGISTRATION.read_text())
    tracking.open_store()
    decision, outcome = decide(record)
    decided = {
        "registered_model": record["registered_model"],
        "version": record["version"],
        "run_id": record["run_id"],
        "outcome": outcome,
        "reasons": decision.reasons,
        "experiment": promotion.temporary_experiment(),
    }
    write_json(paths.PROMOTION, decided)
    print(
        f"{record['registered_model']} version {record['version']}: {outcome}"
        + (f": {'; '.join(decision.reasons)}" if decision.reasons else ""),
        file=sys.stdout,
    )
    timing.write("promote")
