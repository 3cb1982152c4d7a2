"""A SavedModel is a program: its graph runs when it is loaded and called, and a graph can read and write files
(`tf.io.write_file`) like any program. This module records what our export wrote and checks it before anything
loads a SavedModel; reads SavedModel directories, export manifests and the model registry, writes nothing.

- The export stage records each SavedModel's digest (`saved_model_digest`: sha256 over every file's relative path
  and content) in `artifacts/export/manifest.json` and on the registered model version (tag DIGEST_TAG).
- `pipelines.predict` and the evaluate stage's champion check load a SavedModel only when its digest is one of
  those records: the project's own export manifest (for a directory inside this project's artifacts/export), or
  the registered version it came from (a `models:/` URI, the champion). Anything else is refused with a message
  that says why and how to load it deliberately (`--trust-model` on predict).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tfpipe import paths

DIGEST_TAG = "tfpipe.saved_model_sha256"  # on each registered model version our export creates
IDENTITY_TAG = "tfpipe.model_identity"  # model_identity(): one model saved twice has two digests and one identity
MANIFEST_FILE = "manifest.json"  # in artifacts/export: {"saved_model": {"path", "sha256"}, "files": {name: sha256}}
WHY = (
    "a SavedModel runs its graph when loaded, and a graph can read and write files like any program, so this "
    "command loads only what this project's export wrote"
)


class UntrustedModel(ValueError):
    """A SavedModel whose digest matches no record of our export: it is not loaded."""


def file_digest(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def saved_model_digest(directory: Path | str) -> str:
    """sha256 over every file of a SavedModel directory: its relative path and the sha256 of its content, in order.
    A symlink or any file that is not regular is refused (it could point anywhere)."""
    directory = Path(directory)
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_symlink() or (path.exists() and not path.is_file() and not path.is_dir()):
            raise UntrustedModel(f"{path}: a symlink or special file inside a SavedModel; {WHY}")
        if path.is_file():
            digest.update(f"{path.relative_to(directory).as_posix()}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()


def model_identity(directory: Path | str) -> str | None:
    """What a SavedModel computes, as a sha256 that is the same on every save of one model (its digest is not: the
    function names in saved_model.pb carry a per-process counter): TensorFlow's own fingerprint of the graph (function
    names regularized) and of the signatures, and every file of its variables and assets. None when the SavedModel has
    no fingerprint.pb (saved before TensorFlow 2.12). The export registers a model the registry does not hold yet,
    and reuses the version of one it does."""
    from tensorflow.core.protobuf import fingerprint_pb2

    directory = Path(directory)
    if not (directory / "fingerprint.pb").is_file():
        return None
    fingerprint = fingerprint_pb2.FingerprintDef()
    fingerprint.ParseFromString((directory / "fingerprint.pb").read_bytes())
    digest = hashlib.sha256(
        f"graph {fingerprint.graph_def_program_hash}\nsignatures {fingerprint.signature_def_hash}\n".encode()
    )
    for folder in ("variables", "assets"):
        for path in sorted((directory / folder).rglob("*")):
            if path.is_file() and not path.is_symlink():
                digest.update(f"{path.relative_to(directory).as_posix()}\0{file_digest(path)}\n".encode())
    return digest.hexdigest()


def registered_version_of(model_name: str, identity: str | None) -> int | None:
    """The version of `model_name` that holds the model of this identity (model_identity) and our export's digest
    of it, the lowest if several do; None when none does (or identity is None)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if identity is None:
        return None
    try:
        found = mlflow.MlflowClient().search_model_versions(
            f"name = '{model_name}' AND tags.`{IDENTITY_TAG}` = '{identity}'"
        )
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    versions = [int(item.version) for item in found if item.tags.get(DIGEST_TAG)]
    return min(versions) if versions else None


def write_manifest(export_dir: Path, saved_model: Path, files: dict[str, bytes]) -> dict:
    """artifacts/export/manifest.json: the SavedModel's digest and every other exported file's sha256."""
    manifest = {
        "saved_model": {
            "path": saved_model.relative_to(export_dir).as_posix(),
            "sha256": saved_model_digest(saved_model),
        },
        "files": {name: hashlib.sha256(content).hexdigest() for name, content in sorted(files.items())},
    }
    (export_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def download_mlflow_model(uri: str, destination: Path) -> Path:
    """The SavedModel directory inside an MLflow model (models:/name@alias, models:/name/<version>, runs:/...),
    downloaded into destination (nothing is loaded); ValueError when it is not a TensorFlow model."""
    import mlflow
    import yaml

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination)))
    description = yaml.safe_load((local / "MLmodel").read_text()) if (local / "MLmodel").is_file() else {}
    flavors = (description or {}).get("flavors", {})
    if flavors.get("tensorflow"):  # an image model: MLflow's TensorFlow flavor
        return local / flavors["tensorflow"]["saved_model_dir"]
    # a table's model: a python model (components/export/table_pyfunc.py) with the SavedModel among its artifacts
    artifact = ((flavors.get("python_function") or {}).get("artifacts") or {}).get("saved_model")
    if artifact and (local / str(artifact.get("path", ""))).resolve().is_relative_to((local / "artifacts").resolve()):
        return local / artifact["path"]
    raise ValueError(f"{uri}: not a TensorFlow MLflow model (flavors: {sorted(flavors)})")


def registered_digest(uri: str) -> tuple[str, str | None]:
    """(which version, the digest its export recorded) for a models:/name@alias or models:/name/<version> URI;
    (the URI, None) for anything else (runs:/: no version vouches for it)."""
    import mlflow

    client = mlflow.MlflowClient()
    reference = uri.removeprefix("models:/")
    if reference == uri:
        return uri, None
    if "@" in reference:
        name, alias = reference.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        name, number = reference.rsplit("/", 1)
        version = client.get_model_version(name, number)
    return f"{version.name} version {version.version}", version.tags.get(DIGEST_TAG)


def _recorded_by_project_export(directory: Path, digest: str) -> bool:
    """True when directory is this project's exported SavedModel (inside artifacts/export, as its manifest says)."""
    export_dir = paths.EXPORT.resolve()
    resolved = directory.resolve()
    if not resolved.is_relative_to(export_dir):
        return False
    manifest_file = export_dir / MANIFEST_FILE
    if not manifest_file.is_file():
        return False
    recorded = json.loads(manifest_file.read_text()).get("saved_model", {})
    return recorded.get("path") == resolved.relative_to(export_dir).as_posix() and recorded.get("sha256") == digest


def _recorded_in_registry(digest: str) -> str | None:
    """'<name> version <n>' of a registered model version whose recorded digest is this one, or None."""
    import mlflow

    from tfpipe import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    client = mlflow.MlflowClient()
    for version in client.search_model_versions(f"tags.`{DIGEST_TAG}` = '{digest}'"):
        return f"{version.name} version {version.version}"
    return None


def check_saved_model(directory: Path | str, recorded: str | None = None, trust: bool = False) -> str:
    """Raises UntrustedModel unless the SavedModel's digest is `recorded` (the registry's digest of the version it
    was downloaded from), or is recorded by this project's export manifest or a registered model version; returns
    the digest. trust=True (predict's --trust-model) skips the check, deliberately."""
    directory = Path(directory)
    digest = saved_model_digest(directory)
    if trust:
        return digest
    if recorded is not None:
        if digest == recorded:
            return digest
        raise UntrustedModel(
            f"{directory}: its sha256 {digest[:16]}… is not the {recorded[:16]}… its export recorded on the "
            f"registered version: the model changed after it was exported; {WHY}"
        )
    if _recorded_by_project_export(directory, digest):
        return digest
    try:
        if _recorded_in_registry(digest) is not None:
            return digest
    except Exception:  # noqa: BLE001  an unreachable registry cannot vouch for it: refused below, say so
        pass
    raise UntrustedModel(
        f"{directory}: not a SavedModel this project exported (its sha256 {digest[:16]}… is in no export manifest "
        f"and on no registered model version); {WHY}. If you know where it comes from and trust it, load it "
        "deliberately: python -m pipelines.predict --trust-model --model ..."
    )
