"""Beyond one machine: a DVC remote, an MLflow server on PostgreSQL, and multi-worker training.

Each test uses the engine made for the job (DVC remotes, `mlflow server`, MultiWorkerMirroredStrategy)
on 127.0.0.1 and local directories: the same commands as README's "Scaling out", with other URLs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, make_images, stop_process_group, write_prepared
from tests.workspace import copy_reproduced, run, set_params

ROOT = Path(__file__).resolve().parents[1]

# Against the MLflow server, on a copy of the session's reproduced repository (tests/conftest.py): its data
# and preprocessing are up to date (ingest and preprocess do not track), and this train section differs
# from REPRODUCED_PARAMS (another seed), so `dvc repro` trains, evaluates and exports again:
# two epochs, two export variants, an int8 gate that always passes.
SMALL = {
    "train": {"epochs": 2, "early_stopping_patience": 2, "seed": 7},
    "tracking": {"histogram_freq": 0},
    "evaluate": {"min_accuracy": 0.5, "min_margin_over_baseline": -1.0},
    "export": {
        "variants": ["float32", "int8"],
        "prune_epochs": 1,
        "qat_epochs": 1,
        "representative_samples": 50,
        "latency_runs": 10,
        "max_int8_accuracy_drop": 1.0,
        "max_int8_class_drop": 1.0,
    },
}


def dvc(repo: Path, *arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *arguments], repo, env=env)


# --- Data: a DVC remote ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_dvc_remote_push_then_pull_in_a_fresh_clone_has_nothing_to_reproduce(reproduced_repo, tmp_path):
    origin = copy_reproduced(reproduced_repo, tmp_path / "origin")  # after `dvc repro` (tests/conftest.py)
    # The README's command, with a local directory where a team would write s3://bucket/path.
    dvc(origin, "remote", "add", "-d", "storage", str(tmp_path / "remote"))
    commit = ["git", "-c", "user.email=tfpipe@localhost", "-c", "user.name=tfpipe", "commit", "-qm"]
    run(["git", "add", "params.yaml"], origin)  # the params this repro ran with, committed as a user commits them
    run([*commit, "params"], origin)
    run(["git", "add", ".dvc/config", "dvc.lock", "metrics", "plots"], origin)  # the docs' recipe, as written
    run([*commit, "remote"], origin)
    assert not run(["git", "status", "--porcelain", "--untracked-files=no"], origin).stdout.strip()
    pushed = dvc(origin, "push")
    assert any((tmp_path / "remote").rglob("*")), pushed.stdout

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / "data/raw").exists() and not (clone / "artifacts/train").exists()
    dvc(clone, "pull")
    assert (clone / "artifacts/train/model.keras").is_file() and (clone / "data/prepared/manifest.json").is_file()
    # Every output is there but promote's: what this machine's registry says of the export (never in git or DVC).
    assert set(json.loads(dvc(clone, "status", "--json").stdout)) == {"promote"}
    repro = dvc(clone, "repro")
    ran = [line for line in repro.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'promote':"], repro.stdout
    assert "is not in the registry at" in repro.stdout  # the clone's own store holds no model: nothing to promote
    assert json.loads(dvc(clone, "status", "--json").stdout) == {}


# --- Tracking: an MLflow server on PostgreSQL -------------------------------------------------------


def postgres_bin() -> Path | None:
    """Debian's server binaries (apt-get install postgresql); they are not on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parent.parent.name))
    return found[-1].parent if found else None


def wait_for(check, timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited {process.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (initdb in a temporary directory), always stopped."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql; .ci/run does)"
        )
    # PostgreSQL refuses to run as root: as root, the cluster belongs to Debian's `postgres` user.
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    base = Path(tempfile.mkdtemp(prefix="tfpipe-postgres-"))  # /tmp itself, which the postgres user can reach
    if as_owner:
        shutil.chown(base, "postgres")
    data, port = base / "data", free_port()
    subprocess.run(
        [*as_owner, str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "--username=mlflow", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_owner,
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(base / "server.log"),
            "-w",
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {base}",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(
            [*as_owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres_url, tmp_path_factory):
    """`mlflow server` with runs and registry in PostgreSQL and artifacts in a local directory."""
    port, artifacts = free_port(), tmp_path_factory.mktemp("mlflow-artifacts")
    log_path = tmp_path_factory.mktemp("mlflow-log") / "server.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            postgres_url,
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_for(
                lambda: urllib.request.urlopen(f"{url}/health", timeout=2).status == 200, 120, "mlflow server", server
            )
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{error}; its log ends:\n{log_path.read_text()[-3000:]}") from None
        yield url
    finally:
        stop_process_group(server)  # the server's own process group: uvicorn and its worker
        log.close()


@pytest.mark.e2e
def test_pipeline_logs_runs_registry_and_aliases_to_an_mlflow_server_on_postgres(
    mlflow_server, reproduced_repo, tmp_path
):
    import mlflow
    from mlflow import MlflowClient

    repo = copy_reproduced(reproduced_repo, tmp_path / "repo")
    shutil.rmtree(repo / "mlruns")  # the local store of the shared reproduction: this run must not create one
    set_params(repo, SMALL)
    repro = dvc(repo, "repro", env={"MLFLOW_TRACKING_URI": mlflow_server})
    assert all(f"Running stage '{stage}'" in repro.stdout for stage in ("train", "evaluate", "export")), repro.stdout[
        -3000:
    ]
    assert not (repo / "mlruns/mlflow.db").exists(), "the pipeline wrote to the local store, not the server"

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    reference = json.loads((repo / "artifacts/train/run.json").read_text())
    run_info = client.get_run(reference["run_id"])
    assert run_info.info.status == "FINISHED"
    assert len(client.get_metric_history(reference["run_id"], "val_accuracy")) == 2  # one per epoch
    assert run_info.data.metrics["test_accuracy"] > 0.5
    export = json.loads((repo / "artifacts/export/summary.json").read_text())
    version = client.get_model_version("mnist_5k-classifier", str(export["version"]))
    assert version.run_id == reference["run_id"]
    assert export["promoted"], export["int8_gate"]  # blessed and the int8 gate passed: champion
    assert client.get_model_version_by_alias("mnist_5k-classifier", "champion").version == version.version
    # Artifacts go through the server (mlflow-artifacts:/), into its --artifacts-destination.
    downloaded = Path(
        mlflow.artifacts.download_artifacts(
            run_id=reference["run_id"],
            artifact_path="history.csv",
            dst_path=str(tmp_path / "download"),
            tracking_uri=mlflow_server,
        )
    )
    assert downloaded.read_text().startswith("epoch,")
    assert run_info.info.artifact_uri.startswith("mlflow-artifacts:")


# --- Training: MultiWorkerMirroredStrategy ----------------------------------------------------------

TOY_PARAMS = """preprocess:
  image_height: 12
  image_width: 12
train:
  model: lenet5
  epochs: 2
  batch_size: 16
  learning_rate: 0.005
  batch_norm: true
  distribute: {distribute}
tracking:
  histogram_freq: 1
"""
# Two workers see each batch split in two, in another order: close to one worker, not bit-identical.
ACCURACY_TOLERANCE = 0.1


@pytest.fixture
def toy_workspace(tmp_path, mlflow_store):
    images, labels = make_images(num_classes=3, per_class=80)
    write_prepared(tmp_path / "data/prepared", images, labels, ["a", "b", "c"])
    (tmp_path / "params.yaml").write_text(TOY_PARAMS.format(distribute="multi_worker"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_store}
    subprocess.run(
        [sys.executable, "-m", "components.preprocess"], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    return tmp_path, env


def start_workers(directory: Path, env: dict, count: int) -> list[subprocess.Popen]:
    """`python -m components.train` once per worker, each with the TF_CONFIG a real host would get."""
    cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(count)]}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "components.train"],
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**env, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})},
        )
        for index in range(count)
    ]


@pytest.mark.e2e
def run_workers(directory: Path, env: dict, count: int):
    """Starts `count` workers and waits for all of them; returns the processes and their outputs."""
    workers = start_workers(directory, env, count)
    try:
        return workers, [worker.communicate(timeout=240)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()


def test_two_workers_train_like_one_and_only_the_chief_writes_and_tracks(toy_workspace):
    import mlflow

    directory, env = toy_workspace
    workers, outputs = run_workers(directory, env, 2)
    assert [worker.returncode for worker in workers] == [0, 0], "\n".join(
        f"worker {index} exited {worker.returncode}:\n{output[-2500:]}"
        for index, (worker, output) in enumerate(zip(workers, outputs, strict=True))
    )
    multi = json.loads((directory / "artifacts/train/model.json").read_text())
    run = mlflow.get_run(multi["run_id"])
    assert run.data.tags["strategy"] == "multi_worker (2 replicas)" and run.info.status == "FINISHED"
    assert len(mlflow.search_runs(experiment_names=["mnist_5k"])) == 1, "a non-chief worker created an MLflow run"
    assert multi["epochs_run"] == 2 and (directory / "artifacts/train/model.keras").is_file()
    assert not list(directory.rglob("workertemp_*")), "a worker's temporary files were left behind"

    (directory / "params.yaml").write_text(TOY_PARAMS.format(distribute="none"))
    single = subprocess.run(
        [sys.executable, "-m", "components.train"], cwd=directory, env=env, capture_output=True, text=True
    )
    assert single.returncode == 0, single.stderr[-3000:]
    alone = json.loads((directory / "artifacts/train/model.json").read_text())
    difference = abs(multi["final_epoch"]["val_accuracy"] - alone["final_epoch"]["val_accuracy"])
    assert difference <= ACCURACY_TOLERANCE, (multi, alone)


@pytest.mark.e2e
def test_a_killed_worker_is_restarted_and_the_cluster_resumes_from_the_last_epoch(tmp_path, mlflow_store):
    """SIGKILL worker 1 in epoch 3: the chief fails on the broken collective; both restarted, they resume from the
    backup."""
    import mlflow

    epochs = 4
    images, labels = make_images(num_classes=3, per_class=150)
    write_prepared(tmp_path / "data/prepared", images, labels, ["a", "b", "c"])
    (tmp_path / "params.yaml").write_text(
        TOY_PARAMS.format(distribute="multi_worker").replace(
            "epochs: 2", f"epochs: {epochs}\n  early_stopping_patience: 100"
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": mlflow_store}
    subprocess.run(
        [sys.executable, "-m", "components.preprocess"], cwd=tmp_path, env=env, check=True, capture_output=True
    )

    def epochs_logged() -> list[int]:
        runs = mlflow.search_runs(experiment_names=["mnist_5k"], output_format="list")
        return [len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")) for run in runs]

    workers = start_workers(tmp_path, env, 2)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and workers[1].poll() is None and max(epochs_logged(), default=0) < 2:
            time.sleep(0.2)
        workers[1].kill()
        assert max(epochs_logged()) < epochs, "training finished before worker 1 could be killed"
        workers[0].communicate(timeout=120)
        assert workers[0].returncode != 0, "the chief should fail when a worker dies"
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert list((tmp_path / ".cache/train-backup").rglob("chief/checkpoint")), "no backup to resume from"

    restarted, outputs = run_workers(tmp_path, env, 2)  # what a cluster manager does: the same command on every host
    assert [worker.returncode for worker in restarted] == [0, 0], "\n".join(output[-2500:] for output in outputs)
    metrics = json.loads((tmp_path / "artifacts/train/model.json").read_text())
    resumed_from = int(mlflow.get_run(metrics["run_id"]).data.tags["resumed_from_epoch"])
    assert resumed_from >= 3
    history = (tmp_path / "artifacts/train/history.csv").read_text().splitlines()
    assert history[1].startswith(f"{resumed_from},") and history[-1].startswith(f"{epochs},")
