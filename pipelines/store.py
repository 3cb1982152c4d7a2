"""`python -m pipelines.store`: MLflow store upkeep, for the local store or a team's server.

    python -m pipelines.store mark-stale [--store DIR]        # runs a killed process left RUNNING -> KILLED
    python -m pipelines.store trust-version NAME VERSION      # record a legacy version's SavedModel digest
    python -m pipelines.store champion [NAME]                 # the champion now, and is the workspace's export it
    python -m pipelines.store promote                         # the workspace's export vs the champion now

`make ui` runs mark-stale before it serves the store. trust-version is for a registered version exported before
tfpipe recorded SavedModel digests (tfpipe/model_trust.py): evaluate and predict load none without one. promote is
for an export whose champion changed after evaluate compared (another pipeline promoted meanwhile): it scores the
exported version and the champion now on the workspace's test split, as evaluate does, and makes the export the
champion if it passed its gates and is at least as good (components/evaluate/tasks.py's comparison).
"""

from __future__ import annotations

from pathlib import Path

from tfpipe.redaction import redact
from tfpipe.stale_runs import mark_stale_runs
from tfpipe.tracking import create_sqlite_store, tracking_uri


def trust_version(model_name: str, version: str) -> str:
    """Records the digest of a registered version's SavedModel as it is now (tag model_trust.DIGEST_TAG), so that
    evaluate and predict load it: for a version exported before tfpipe recorded one, and only if you trust it."""
    import tempfile

    import mlflow

    from tfpipe import model_trust

    client = mlflow.MlflowClient()
    existing = client.get_model_version(model_name, version).tags.get(model_trust.DIGEST_TAG)
    with tempfile.TemporaryDirectory(prefix="tfpipe-trust-") as scratch:
        directory = model_trust.download_mlflow_model(f"models:/{model_name}/{version}", Path(scratch))
        digest = model_trust.saved_model_digest(directory)
    if existing and existing != digest:
        raise SystemExit(
            f"{model_name} version {version}: its SavedModel changed since its export recorded {existing[:16]}…; "
            "not trusted (re-export it instead)"
        )
    client.set_model_version_tag(model_name, version, model_trust.DIGEST_TAG, digest)
    return digest


def describe_champion(model_name: str, summary_file: Path) -> str:
    """The registry's champion of `model_name` now, and whether the export in the workspace (its summary.json,
    perhaps restored by DVC from its run-cache) is that version."""
    import json

    from tfpipe.tracking import champion_version

    champion = champion_version(model_name)
    now = f"{model_name}: champion is version {champion.version}" if champion else f"{model_name}: no champion yet"
    if not summary_file.is_file():
        return f"{now}; no export in this workspace ({summary_file} missing)"
    summary = json.loads(summary_file.read_text())
    if summary.get("registered_model") != model_name:
        return f"{now}; the workspace's export registered {summary.get('registered_model')}, another model"
    version, when = summary.get("version"), summary.get("exported_at", "an earlier run")
    if champion and str(version) == str(champion.version):
        return f"{now}: the workspace's export (exported {when})"
    return (
        f"{now}; the workspace's export is version {version} (exported {when}, "
        f"{'promoted then, replaced since' if summary.get('promoted') else 'not promoted'})"
    )


def promote(summary_file: Path) -> str:
    """Compares the workspace's exported version with the champion now, both scored on the workspace's test split,
    and moves `champion` to it when it passed its gates and is at least as good; returns what happened."""
    import json

    from components.evaluate.champion import test_split_scorer
    from components.evaluate.tasks import TASKS
    from tfpipe import paths, promotion, records
    from tfpipe.params_file import load_params
    from tfpipe.tracking import champion_version

    if not summary_file.is_file():
        raise SystemExit(f"{summary_file} is missing: nothing exported in this workspace (dvc repro)")
    summary = json.loads(summary_file.read_text())
    name, version = summary["registered_model"], int(summary["version"])
    refused = [] if summary["blessed"] else ["evaluate did not bless it"]
    refused += [] if summary["int8_gate"]["passed"] else summary["int8_gate"]["reasons"]
    if refused:
        return f"{name} version {version}: not promoted: " + "; ".join(refused)
    champion = champion_version(name)
    if champion is not None and int(champion.version) == version:
        return f"{name} version {version}: the champion already"
    reasons = []
    if champion is not None:
        params, manifest = load_params(), records.read_manifest(paths.PREPARED)
        score = test_split_scorer(params, manifest)
        task = TASKS[manifest.get("task", "classification")]
        comparison, reasons = task.compare(
            score(f"models:/{name}/{version}"),
            score(f"models:/{name}/{champion.version}"),
            params.evaluate,
            f"champion v{champion.version}",
        )
        if any(reason.startswith("FAIL") for reason in reasons):
            return f"{name} version {version}: not promoted:\n  " + "\n  ".join(reasons)
    promotion.move_champion(name, version)
    return f"{name} version {version}: now the champion" + "".join(f"\n  {reason}" for reason in reasons)


def main(argv: list[str] | None = None) -> None:
    """`python -m pipelines.store mark-stale [--store DIR]`: what `make ui` runs before serving the store;
    `python -m pipelines.store trust-version NAME VERSION`: record a legacy version's SavedModel digest;
    `python -m pipelines.store champion [NAME]`: the champion, and whether the workspace's export is it;
    `python -m pipelines.store promote`: the workspace's export becomes the champion if at least as good as it."""
    import argparse

    parser = argparse.ArgumentParser(description="MLflow store maintenance")
    commands = parser.add_subparsers(dest="command", required=True)
    mark = commands.add_parser("mark-stale", help="mark KILLED the runs whose process on this host is gone")
    trust = commands.add_parser(
        "trust-version",
        help="record the SavedModel digest of a version exported before tfpipe recorded one (only if you trust it)",
    )
    trust.add_argument("name")
    trust.add_argument("version")
    champion = commands.add_parser("champion", help="the registry's champion, and whether the workspace's export is it")
    champion.add_argument("name", nargs="?", help="the registered model (default: from params.yaml)")
    promote_command = commands.add_parser(
        "promote",
        help="compare the workspace's export with the champion now on its test split; promote it if at least as good",
    )
    for command in (mark, trust, champion, promote_command):
        command.add_argument(
            "--store", type=Path, help="a local store directory (default: MLFLOW_TRACKING_URI, else <repo>/mlruns)"
        )
    args = parser.parse_args(argv)
    import mlflow

    uri = f"sqlite:///{args.store.resolve() / 'mlflow.db'}" if args.store is not None else tracking_uri()
    create_sqlite_store(uri)
    mlflow.set_tracking_uri(uri)
    if args.command == "trust-version":
        digest = trust_version(args.name, args.version)
        print(f"{args.name} version {args.version}: SavedModel digest {digest} recorded; evaluate and predict load it")
        return
    if args.command == "champion":
        from tfpipe import paths
        from tfpipe.config import registered_model_name
        from tfpipe.params_file import load_params

        print(describe_champion(args.name or registered_model_name(load_params()), paths.EXPORT / "summary.json"))
        return
    if args.command == "promote":
        from tfpipe import paths

        print(promote(paths.EXPORT / "summary.json"))
        return
    stale = mark_stale_runs()
    print(
        f"{redact(mlflow.get_tracking_uri())}: {len(stale)} run(s) left RUNNING by a killed process marked KILLED"
        + (f": {', '.join(stale)}" if stale else "")
    )


if __name__ == "__main__":
    main()
