"""`python -m pipelines.store`: MLflow store upkeep, for the local store or a team's server.

    python -m pipelines.store mark-stale [--store DIR]        # runs a killed process left RUNNING -> KILLED
    python -m pipelines.store trust-version NAME VERSION      # record a legacy version's SavedModel digest

`make ui` runs mark-stale before it serves the store. trust-version is for a registered version exported before
tfpipe recorded SavedModel digests (tfpipe/model_trust.py): evaluate and predict load none without one.
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


def main(argv: list[str] | None = None) -> None:
    """`python -m pipelines.store mark-stale [--store DIR]`: what `make ui` runs before serving the store;
    `python -m pipelines.store trust-version NAME VERSION`: record a legacy version's SavedModel digest."""
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
    for command in (mark, trust):
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
    stale = mark_stale_runs()
    print(
        f"{redact(mlflow.get_tracking_uri())}: {len(stale)} run(s) left RUNNING by a killed process marked KILLED"
        + (f": {', '.join(stale)}" if stale else "")
    )


if __name__ == "__main__":
    main()
