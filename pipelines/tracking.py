"""MLflow and TensorBoard set-up: the one place that knows where runs are stored.

Logging is explicit, not autolog: mlflow.tensorflow.autolog targets Keras 3 and would log a second
copy of the model from every fit() (the pruning fine-tune included); we log params once from
params.yaml, per-epoch metrics from a callback, and models only from the export stage.

MLflow is imported where it is used, not here: importing this module stays cheap. The train stage
opens the store and makes every call on a background thread (BackgroundRun), overlapping training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from pipelines import paths
from pipelines.redaction import redact

CHAMPION_ALIAS = (
    "champion"  # the registered model's alias that export moves to a promoted version, evaluate compares with
)


def champion_version(model_name: str):
    """The ModelVersion the champion alias of `model_name` points to, or None when there is none yet (no such
    registered model, or no alias); any other registry error (one that cannot be read) raises."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.MlflowClient().get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def project_root(cwd: Path | None = None) -> Path:
    """The repository the stage belongs to, also when DVC runs it in a temporary experiment copy.

    `dvc exp run --temp` and queued experiments run in <repo>/.dvc/tmp/exps/<tmp>/; their runs
    and TensorBoard logs belong in the repository's own store, not in a copy deleted afterwards.
    """
    cwd = (cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for index in range(len(parts) - 2):
        if parts[index : index + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:index])
    return cwd


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set (a team's server), else the SQLite store under <repo>/mlruns/."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / paths.MLRUNS / 'mlflow.db'}"


def create_sqlite_store(uri: str) -> None:
    """Creates a new SQLite store whole: its tables are made under a temporary name, then linked into place.

    MLflow builds a new database in many steps (~2 s of migrations); a stage killed meanwhile (the
    train stage trains while its run starts in the background) would leave a store no later run can open.
    """
    import mlflow

    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///"))
    if database.exists():
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    staging = database.with_name(f".{database.name}.tmp-{secrets.token_hex(4)}")
    try:
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{staging}").search_experiments(
            max_results=1
        )  # runs the migrations
        os.link(staging, database)  # fails if another process created it meanwhile: theirs is kept
    except FileExistsError:
        pass
    finally:
        staging.unlink(missing_ok=True)


def configure(experiment_name: str) -> str:
    """Points MLflow at the store and makes sure the experiment exists; returns its id."""
    import mlflow

    local_store = not os.environ.get("MLFLOW_TRACKING_URI")  # read first: set_tracking_uri sets the variable
    (project_root() / paths.MLRUNS).mkdir(exist_ok=True)
    create_sqlite_store(tracking_uri())
    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    # Local store: artifacts under <repo>/mlruns/artifacts/, whatever the working directory (MLflow's
    # default, ./mlruns/<id>, would land in a temporary experiment copy). A server decides for itself.
    location = (project_root() / paths.MLRUNS / "artifacts" / experiment_name).as_uri() if local_store else None
    return mlflow.create_experiment(experiment_name, artifact_location=location)


class Terminated(SystemExit):
    """SIGTERM (`kill`, a CI timeout, a scheduler) arrived: the run ends KILLED, not RUNNING."""


def _raise_on_sigterm(signum, frame):
    raise Terminated(128 + signum)


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), None if there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:  # AccessDenied and the like: it exists, but we cannot tell when it started
        return -1.0


def process_tags() -> dict[str, str]:
    """What identifies the process that owns a run, even after its PID is reused: host, PID and start time."""
    return {
        "tfpipe.host": socket.gethostname(),
        "tfpipe.pid": str(os.getpid()),
        "tfpipe.process_start": f"{process_start_time(os.getpid()):.2f}",
    }


def owner_is_gone(tags: dict[str, str]) -> bool:
    """True when the run's process (same host) no longer exists, or its PID now belongs to a process that started
    later."""
    pid, host, started = tags.get("tfpipe.pid"), tags.get("tfpipe.host"), tags.get("tfpipe.process_start")
    if host != socket.gethostname() or not pid or not pid.isdigit():
        return False  # another host's run: only that host can tell
    actual = process_start_time(int(pid))
    if actual is None:
        return True
    if actual < 0 or started is None:
        return False  # alive, and either not comparable or recorded before start times were
    return abs(actual - float(started)) > 1.0  # the PID was reused by a newer process


def mark_stale_runs(experiment_ids: list[str] | None = None) -> list[str]:
    """Marks KILLED the runs left RUNNING by a process of this host that is gone (SIGKILL, OOM, a reboot).

    Every experiment is searched unless experiment_ids is given. Called wherever the project opens
    the store: each stage's run, `make ui`, `python -m pipelines.tracking mark-stale`.
    """
    import mlflow

    client = mlflow.MlflowClient()
    if experiment_ids is None:
        experiment_ids = [experiment.experiment_id for experiment in client.search_experiments()]
    stale = []
    for start in range(0, len(experiment_ids), 100):  # MLflow searches at most 100 experiments at a time
        for run in client.search_runs(
            experiment_ids[start : start + 100], filter_string="attributes.status = 'RUNNING'", max_results=50000
        ):
            if owner_is_gone(run.data.tags):
                client.set_tag(
                    run.info.run_id,
                    "tfpipe.stale",
                    f"process {run.data.tags['tfpipe.pid']} died without ending the run; "
                    f"marked KILLED by process {os.getpid()}",
                )
                client.set_terminated(run.info.run_id, status="KILLED")
                stale.append(run.info.run_id)
    return stale


def _start_run(experiment_name: str, run_id: str | None, run_name: str | None, system_metrics: bool | None):
    import mlflow

    experiment_id = configure(experiment_name)
    for stale_id in mark_stale_runs():
        print(f"MLflow run {stale_id} was left RUNNING by a killed process; marked KILLED")
    if system_metrics and "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL" not in os.environ:
        mlflow.set_system_metrics_sampling_interval(3)
    run = mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else experiment_id,
        run_name=run_name,
        log_system_metrics=system_metrics,
    )
    mlflow.set_tags(process_tags())
    return run


def _end_status(error: BaseException | None) -> str:
    if error is None:
        return "FINISHED"
    return "KILLED" if isinstance(error, Terminated) else "FAILED"


@contextlib.contextmanager
def _sigterm_raises():
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm) if in_main_thread else None
    try:
        yield
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stage_run(
    experiment_name: str, run_id: str | None = None, run_name: str | None = None, system_metrics: bool | None = None
):
    """Starts (train) or resumes (evaluate, export) the model's run, and always ends it.

    FINISHED when the block completes, FAILED on an exception, KILLED on SIGTERM. A run that a
    SIGKILLed process left RUNNING is marked KILLED by the next stage_run on the same host.
    system_metrics=True samples CPU, memory, disk and network (psutil; GPUs with pynvml) every 3 s
    (MLflow's 10 s default misses a short run; MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides).
    """
    import mlflow

    with _sigterm_raises():
        run = _start_run(experiment_name, run_id, run_name, system_metrics)
        try:
            yield run
        except BaseException as error:
            mlflow.end_run(status=_end_status(error))
            raise
        mlflow.end_run(status="FINISHED")


class BackgroundRun:
    """An MLflow run that one background thread starts and writes, in the order the calls are queued.

    The train stage's tracking (importing MLflow, opening the store, params, tags, the dataset,
    per-epoch metrics) would otherwise all come before or between training steps; here it overlaps
    them. MLflow's active run belongs to a thread, so every call runs on the same worker. The first
    failure stops the queue and is raised in the stage at the next `raise_if_failed()` (each epoch
    end) or at the end, so a broken store still fails the stage.
    """

    def __init__(self, experiment_name: str, run_name: str | None = None, system_metrics: bool | None = None):
        # Imported here, on the stage's thread, not on the worker: protobuf's descriptor pool is not safe for two
        # threads importing generated modules at once (MLflow's on the worker, TensorBoard's as training starts
        # here), which failed a run with "Couldn't build proto file into descriptor pool". ~1 s; the store's
        # opening and every call still overlap training.
        import mlflow  # noqa: F401
        import mlflow.data  # noqa: F401
        import mlflow.entities  # noqa: F401
        from tensorboard.plugins.hparams import api  # noqa: F401

        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow")
        self._error: BaseException | None = None
        self._started = self.submit(_start_run, experiment_name, None, run_name, system_metrics)

    def submit(self, function, *args, **kwargs) -> Future:
        """Queues function(*args, **kwargs); skipped once an earlier call has failed."""

        def call():
            if self._error is not None:
                return None
            try:
                return function(*args, **kwargs)
            except BaseException as error:
                self._error = error
                raise

        return self._executor.submit(call)

    @property
    def client(self):
        """An MlflowClient for the run's store: use it in queued calls, e.g.
        run.submit(lambda: run.client.log_artifact(run.run_id, "history.csv"))."""
        import mlflow

        if getattr(self, "_client", None) is None:
            self._client = mlflow.MlflowClient()
        return self._client

    @property
    def run_id(self) -> str:
        return self.info.run_id

    def log_params(self, params: dict) -> Future:
        """Queues MlflowClient.log_batch of params (values as text, as MLflow stores them)."""
        from mlflow.entities import Param

        return self.submit(
            lambda: self.client.log_batch(self.run_id, params=[Param(key, str(value)) for key, value in params.items()])
        )

    def set_tags(self, tags: dict) -> Future:
        from mlflow.entities import RunTag

        return self.submit(
            lambda: self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])
        )

    def log_metrics(self, metrics: dict, step: int) -> Future:
        def log():
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.client.log_batch(
                self.run_id, metrics=[Metric(key, value, now, step) for key, value in metrics.items()]
            )

        return self.submit(log)

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(redact(f"MLflow tracking failed ({tracking_uri()}): {self._error}")) from self._error

    @property
    def info(self):
        """The run's RunInfo (run_id, experiment_id); waits until the run has started, raises if it could not."""
        if self._started.exception() is not None:
            self.raise_if_failed()
        return self._started.result().info

    def finish(self, error: BaseException | None) -> None:
        """Waits for every queued call, then ends the run FINISHED, FAILED or KILLED (error: what the stage raised)."""

        def end():
            try:
                import mlflow

                if mlflow.active_run() is not None:  # this thread's run, also when a call after the start failed
                    mlflow.end_run(status=_end_status(error or self._error))
            except Exception:
                if error is None and self._error is None:
                    raise  # otherwise the error that stopped the stage or the queue is the one to report

        try:
            self._executor.submit(end).result()  # not self.submit: it must run after a failure too
        finally:
            self._executor.shutdown(wait=True)
        if error is None:
            self.raise_if_failed()


@contextlib.contextmanager
def background_stage_run(experiment_name: str, run_name: str | None = None, system_metrics: bool | None = None):
    """stage_run for the train stage: the same run ending, with MLflow's work on a BackgroundRun."""
    with _sigterm_raises():
        run = BackgroundRun(experiment_name, run_name, system_metrics)
        try:
            yield run
        except BaseException as error:
            run.finish(error)
            raise
        run.finish(None)


def log_child_runs(client, parent_run_id: str, trials, chosen: str) -> list[str]:
    """Each search candidate (components/train_search.Trial) as a finished child run of the stage's run, with its
    params, per-epoch metrics and real start and end times: the MLflow UI compares them side by side. Created and
    ended in one call, with the process tags, so none is ever left RUNNING."""
    from mlflow.entities import Metric, Param, RunTag

    parent = client.get_run(parent_run_id)
    run_ids = []
    for trial in trials:
        tags = {
            "mlflow.parentRunId": parent_run_id,
            "mlflow.runName": f"search: {trial.candidate.name}",
            "search.round": str(trial.round),
            "search.chosen": str(trial.candidate.name == chosen).lower(),
            **process_tags(),
        }
        child = client.create_run(parent.info.experiment_id, start_time=trial.started_ms, tags=tags)
        try:
            metrics = [
                Metric(name, value, trial.started_ms + step, step)
                for step, row in enumerate(trial.history)
                for name, value in row.items()
            ]
            metrics += [
                Metric("search_val_accuracy", trial.val_accuracy, trial.ended_ms, 0),
                Metric("search_seconds", trial.seconds, trial.ended_ms, 0),
                Metric("search_images_per_second", trial.images_per_second, trial.ended_ms, 0),
            ]
            params = [
                Param("train.model", trial.candidate.model),
                Param("train.augmentation", trial.candidate.augmentation),
                Param("search.epochs", str(len(trial.history))),
            ]
            client.log_batch(
                child.info.run_id,
                metrics=[metric for metric in metrics if metric.value == metric.value],  # NaN: a diverged candidate
                params=params,
                tags=[RunTag("mlflow.note.content", f"search candidate: {trial.candidate.name}")],
            )
        finally:
            client.set_terminated(child.info.run_id, status="FINISHED", end_time=trial.ended_ms)
        run_ids.append(child.info.run_id)
    return run_ids


def git_tags() -> dict[str, str]:
    """Git commit and dirty flag, and the data.dvc hash, so a run can be traced to its inputs."""
    tags = {}
    try:
        tags["git.commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
        ).stdout
        tags["git.dirty"] = str(bool(dirty.strip())).lower()
    except (OSError, subprocess.CalledProcessError):
        tags["git.commit"] = "unknown"
    data_dvc = Path("data.dvc")
    if data_dvc.is_file():
        import yaml

        with data_dvc.open() as stream:
            outs = (yaml.safe_load(stream) or {}).get("outs", [{}])
        tags["data.dvc.md5"] = str(outs[0].get("md5", "unknown"))
    return tags


def dvc_lock_tags(stages=("ingest", "preprocess"), lock_file: Path = Path("dvc.lock")) -> dict[str, str]:
    """The md5 of each output of the upstream stages in dvc.lock ('dvc.lock.ingest.data/prepared'):
    the exact prepared data and preprocessing model a run trained on, as DVC recorded them."""
    if not lock_file.is_file():
        return {}
    import yaml

    with lock_file.open() as stream:
        locked = (yaml.safe_load(stream) or {}).get("stages", {})
    return {
        f"dvc.lock.{stage}.{out['path']}": str(out.get("md5", "unknown"))
        for stage in stages
        for out in locked.get(stage, {}).get("outs", [])
    }


def changed_params(params: dict, committed: str = "HEAD:params.yaml") -> list[str]:
    """The flattened params that differ from params.yaml as committed, ["train.learning_rate=0.004"]; [] when
    nothing differs or there is no commit to compare with."""
    try:
        text = subprocess.run(["git", "show", committed], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    from pipelines.config import ParamsError, parse_params, yaml_load

    try:
        before = flatten("", json.loads(json.dumps(asdict(parse_params(yaml_load(text) or {})), default=str)))
    except (ParamsError, ValueError):
        return []
    now = flatten("", params)
    return [f"{key}={value}" for key, value in now.items() if before.get(key) != value]


def run_name(model: str, params: dict, changed: list[str] | None = None) -> str:
    """What tells this run apart in the MLflow UI: the DVC experiment's name when `dvc exp run` runs it, else the
    params that differ from the committed params.yaml (`changed`, when the caller has them: changed_params), else
    the model and a short hash of the params."""
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    changed = changed_params(params) if changed is None else changed
    if changed:
        name = ", ".join(changed)
        return name if len(name) <= 80 else f"{name[:77]}..."
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:7]
    return f"{model}-{digest}"


def set_lineage_tags(upstream_stages: tuple[str, ...], tags: dict[str, str]) -> None:
    """Tags the active run with git_tags(), dvc_lock_tags(upstream_stages) and `tags`."""
    import mlflow

    mlflow.set_tags({**git_tags(), **dvc_lock_tags(upstream_stages), **tags})


def log_dataset(examples_csv: Path, name: str, context: str = "training") -> None:
    """The per-example table ingest wrote (file, label, split, sha256...) as the run's mlflow.data input."""
    import warnings

    import mlflow
    import pandas as pd

    with warnings.catch_warnings():  # MLflow registers two local-file sources and warns that it picked one
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            pd.read_csv(examples_csv), source=str(examples_csv.resolve()), targets="label", name=name
        )
    mlflow.log_input(dataset, context=context)


def flatten(prefix: str, value, as_text: bool = True) -> dict:
    """{'train': {'epochs': 3}} -> {'train.epochs': '3'} for mlflow.log_params (as_text=False: {'train.epochs': 3})."""
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(flatten(f"{prefix}.{key}" if prefix else str(key), item, as_text))
        return flat
    if not as_text and isinstance(value, (bool, int, float, str)):
        return {prefix: value}
    return {
        prefix: json.dumps(value) if isinstance(value, (list, tuple)) or (value is None and not as_text) else str(value)
    }


def log_hparams(log_dir: Path, hparams: dict, trial_id: str) -> None:
    """Writes the run's params into its TensorBoard directory for the HParams dashboard. The session
    is the run's directory itself, so its train/, validation/ and evaluate/ scalars are its metrics."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    with tf.summary.create_file_writer(str(log_dir)).as_default():
        hp.hparams(hparams, trial_id=trial_id)


def tensorboard_name(run_name: str) -> str:
    """'20261123-004512-lenet5-mnist_5k-3fa9c1': the train run's TensorBoard directory, named before the
    MLflow run id exists (the run starts in the background); the run's `tensorboard.dir` tag links the two."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{run_name.replace('/', '-')}-{secrets.token_hex(3)}"


def tensorboard_dir(name: str) -> Path:
    """One TensorBoard directory per run, kept across runs so `make tensorboard` compares them."""
    return project_root() / paths.TENSORBOARD / name


def write_run_reference(path: Path, run, experiment_name: str, tensorboard: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as stream:
        json.dump(
            {
                "run_id": run.info.run_id,
                "experiment_id": run.info.experiment_id,
                "experiment_name": experiment_name,
                "tensorboard": tensorboard,
            },
            stream,
            indent=2,
        )


def read_run_reference(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run reference not found; run the train stage first (dvc repro train)")
    with path.open() as stream:
        return json.load(stream)


def mlflow_epoch_callback(run: BackgroundRun):
    """A Keras callback that queues every epoch's metrics (loss, accuracy, val_*, lr) on the run, and
    stops training with the error if tracking has failed."""
    import tf_keras as keras

    class MlflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            run.raise_if_failed()
            metrics = {key: float(value) for key, value in (logs or {}).items() if value is not None}
            if metrics:
                run.log_metrics(metrics, step=epoch)

    return MlflowEpochLogger()


def trust_version(model_name: str, version: str) -> str:
    """Records the digest of a registered version's SavedModel as it is now (tag model_trust.DIGEST_TAG), so that
    evaluate and predict load it: for a version exported before tfpipe recorded one, and only if you trust it."""
    import tempfile

    import mlflow

    from pipelines import model_trust

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
    """`python -m pipelines.tracking mark-stale [--store DIR]`: what `make ui` runs before serving the store;
    `python -m pipelines.tracking trust-version NAME VERSION`: record a legacy version's SavedModel digest."""
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
