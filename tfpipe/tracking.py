"""MLflow and TensorBoard set-up: the one place that knows where runs are stored.

Logging is explicit, not autolog: mlflow.tensorflow.autolog targets Keras 3 and would log a second
copy of the model from every fit() (the pruning fine-tune included); we log params once from
params.yaml, per-epoch metrics from a callback, and models only from the export stage.

MLflow is imported where it is used, not here: importing this module stays cheap. The train stage
opens the store and makes every call on a background thread (BackgroundRun), overlapping training.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tfpipe import paths, run_watch, store_location
from tfpipe.redaction import redact
from tfpipe.stale_runs import mark_stale_runs, process_tags

CHAMPION_ALIAS = "champion"  # the registered model's alias export moves to a promoted version, evaluate compares with


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
    found = [index for index in range(len(cwd.parts) - 2) if cwd.parts[index : index + 3] == (".dvc", "tmp", "exps")]
    return Path(*cwd.parts[: found[0]]) if found else cwd


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
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{staging}").search_experiments(max_results=1)  # migrations
        os.link(staging, database)  # fails if another process created it meanwhile: theirs is kept
    except FileExistsError:
        pass
    finally:
        staging.unlink(missing_ok=True)


def open_store() -> None:
    """Points MLflow at the store: a new local one is created whole, a copied one first made its own."""
    import mlflow

    (project_root() / paths.MLRUNS).mkdir(exist_ok=True)
    create_sqlite_store(tracking_uri())
    if tracking_uri().startswith("sqlite:///"):  # a copied store: its artifacts go into it, not the original's
        store_location.keep_in_store(Path(tracking_uri().removeprefix("sqlite:///")))
    mlflow.set_tracking_uri(tracking_uri())


def configure(experiment_name: str) -> str:
    """Points MLflow at the store and makes sure the experiment exists; returns its id."""
    import mlflow

    local_store = not os.environ.get("MLFLOW_TRACKING_URI")  # read first: set_tracking_uri sets the variable
    open_store()
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
    run_watch.watch(run.info.run_id, mlflow.get_tracking_uri())  # marks the run KILLED if this process dies
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
            run_watch.release(run.info.run_id)
            raise
        mlflow.end_run(status="FINISHED")
        run_watch.release(run.info.run_id)


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

                active = mlflow.active_run()
                if active is not None:  # this thread's run, also when a call after the start failed
                    mlflow.end_run(status=_end_status(error or self._error))
                    run_watch.release(active.info.run_id)
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
