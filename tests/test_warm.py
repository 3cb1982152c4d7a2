"""The warm server (tfpipe/warm.py): a stage runs in a fork of it as it would have run alone (its directory,
environment, argv, stdio, exit code, signals, its checkout's current code), the first stage starts it, and it can be
turned off. A small stage of a project of its own stands in for the real ones (the end-to-end tests run those
through it); its server imports only json, so each test starts in a second."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tfpipe import warm

ROOT = Path(__file__).resolve().parents[1]

STAGE = """
import json, os, sys, time
from pathlib import Path

def main():
    mode = os.environ.get("FAKE", "ok")
    record = {"pid": os.getpid(), "argv0": sys.argv[0], "cwd": os.getcwd(), "value": os.environ.get("FAKE_VALUE")}
    print(json.dumps({**record, "marker": MARKER}), flush=True)
    if mode == "fail":
        raise ValueError("fake: bad value 'x' for train.epochs in params.yaml (expected an integer)")
    if mode == "exit3":
        sys.exit(3)
    if mode == "stdin":
        print(sys.stdin.read().upper(), flush=True)
    if mode == "sleep":
        Path(os.environ["FAKE_PID_FILE"]).write_text(str(os.getpid()))
        time.sleep(120)
"""
MAIN = """
from tfpipe import warm


def main():
    from components.fake.stage import main

    main()


warm.run_stage("fake", main)
"""


@pytest.fixture
def project(tmp_path):
    """A project with one stage, components/fake, and its own runtime folder for servers (stopped at the end)."""
    (tmp_path / "components/fake").mkdir(parents=True)
    (tmp_path / "components/__init__.py").write_text("")
    (tmp_path / "components/fake/__init__.py").write_text("")
    (tmp_path / "components/fake/__main__.py").write_text(MAIN)
    (tmp_path / "components/fake/stage.py").write_text('MARKER = "first"\n' + STAGE)
    runtime = Path(tempfile.mkdtemp(prefix="tfpipe-test-", dir="/tmp"))  # short: a socket's path has 107 bytes
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # tfpipe; the project's own components come first (its directory)
        "TFPIPE_WARM_DIR": str(runtime / "servers"),
        "TFPIPE_WARM_PRELOAD": "json",
        "TFPIPE_WARM_IDLE_S": "120",
    }
    env.pop("TFPIPE_WARM", None)
    yield tmp_path, env
    subprocess.run([sys.executable, "-m", "tfpipe.warm", "stop"], env=env, cwd=ROOT, capture_output=True)
    shutil.rmtree(runtime, ignore_errors=True)


def launch(project, extra: dict | None = None, **kwargs) -> subprocess.Popen:
    folder, env = project
    return subprocess.Popen(
        [sys.executable, "-m", "components.fake"],
        cwd=folder,
        env={**env, **(extra or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def finish(process: subprocess.Popen, stdin: str | None = None) -> tuple[int, dict, str]:
    out, err = process.communicate(stdin, timeout=60)
    return process.returncode, json.loads(out.splitlines()[0]) if out else {}, err


def runtime_folder(project) -> Path:
    return Path(project[1]["TFPIPE_WARM_DIR"])


def wait_for_server(project, present: bool = True) -> None:
    folder = runtime_folder(project)
    deadline = time.monotonic() + 60
    while any(folder.glob("*.sock")) != present:
        assert time.monotonic() < deadline, f"the server's socket never {'appeared' if present else 'went'}"
        time.sleep(0.1)


def warm_run(project, extra: dict | None = None, stdin: str | None = None) -> tuple[int, dict, str, int]:
    process = launch(project, extra, stdin=subprocess.PIPE if stdin is not None else None)
    code, record, err = finish(process, stdin)
    return code, record, err, process.pid


def test_the_first_stage_runs_itself_and_starts_the_server_the_next_runs_in_a_fork_of_it(project):
    code, record, err, launcher = warm_run(project, {"FAKE_VALUE": "one"})
    assert code == 0, err
    assert record["pid"] == launcher  # no server yet: the stage ran in its own process
    wait_for_server(project)
    code, record, err, launcher = warm_run(project, {"FAKE_VALUE": "two"})
    assert code == 0, err
    assert record["pid"] != launcher  # a fork of the server
    assert record["value"] == "two" and record["cwd"] == str(project[0])  # the launcher's environment and directory
    assert record["argv0"] == str(project[0] / "components/fake/__main__.py")
    # The stage's own code, imported fresh from its checkout, whatever the server had: an edit is never stale.
    (project[0] / "components/fake/stage.py").write_text('MARKER = "edited"\n' + STAGE)
    code, record, err, launcher = warm_run(project)
    assert code == 0 and record["pid"] != launcher and record["marker"] == "edited", err


def test_a_forked_stage_fails_as_it_would_alone(project):
    warm_run(project)
    wait_for_server(project)
    code, record, err, launcher = warm_run(project, {"FAKE": "fail"})
    assert record["pid"] != launcher
    assert code == 1
    assert "ValueError: fake: bad value 'x' for train.epochs in params.yaml" in err
    assert "fake: DVC removed this stage's previous outputs" in err  # run_stage's hint, as without a server
    code, record, err, launcher = warm_run(project, {"FAKE": "exit3"})
    assert record["pid"] != launcher and code == 3, err


def test_the_stage_reads_the_launchers_stdin(project):
    warm_run(project)
    wait_for_server(project)
    process = launch(project, {"FAKE": "stdin"}, stdin=subprocess.PIPE)
    out, err = process.communicate("piped in\n", timeout=60)
    assert process.returncode == 0, err
    assert json.loads(out.splitlines()[0])["pid"] != process.pid
    assert "PIPED IN" in out


def sleeping_stage(project, tmp_path) -> tuple[subprocess.Popen, int]:
    """A launcher whose stage runs (and sleeps) in a fork of the server: the launcher and the stage's pid."""
    warm_run(project)
    wait_for_server(project)
    pid_file = tmp_path / "stage.pid"
    process = launch(project, {"FAKE": "sleep", "FAKE_PID_FILE": str(pid_file)})
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    return process, int(pid_file.read_text())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_signal_to_the_launcher_reaches_the_stage(project, tmp_path, signum):
    process, stage = sleeping_stage(project, tmp_path)
    assert stage != process.pid
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    if signum == signal.SIGINT:  # the stage's KeyboardInterrupt, its hint, and Python's exit status for it
        assert "KeyboardInterrupt" in err and process.returncode == -signal.SIGINT
    else:
        assert process.returncode == -signum
    deadline = time.monotonic() + 30
    while psutil.pid_exists(stage) and psutil.Process(stage).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"the stage outlived its launcher's {signum!r}"
        time.sleep(0.1)


def wait_for_status(pid: int, wanted: set[str]) -> None:
    deadline = time.monotonic() + 30
    while psutil.Process(pid).status() not in wanted:
        assert time.monotonic() < deadline, f"process {pid} is {psutil.Process(pid).status()}, not {wanted}"
        time.sleep(0.1)


def test_ctrl_z_stops_the_launcher_and_its_stage_and_fg_continues_both(project, tmp_path):
    process, stage = sleeping_stage(project, tmp_path)
    process.send_signal(signal.SIGTSTP)
    wait_for_status(process.pid, {psutil.STATUS_STOPPED})
    wait_for_status(stage, {psutil.STATUS_STOPPED})
    process.send_signal(signal.SIGCONT)
    wait_for_status(stage, {psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING})
    wait_for_status(process.pid, {psutil.STATUS_SLEEPING, psutil.STATUS_RUNNING})
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM


def test_a_request_for_anything_but_a_stage_runs_nothing(project):
    """The socket runs `components.<stage>` modules only: a request naming another module gets no process."""
    import socket

    warm_run(project)
    wait_for_server(project)
    (path,) = runtime_folder(project).glob("*.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        request = {"module": "os", "cwd": "/", "env": {}, "argv": ["x"], "path": sys.path}
        warm.send(sock, request, [0, 1, 2])
        assert warm.receive(sock) == (None, [])  # the supervisor refused and closed: no stage, no pid


def test_turned_off_or_unsafe_the_stage_runs_itself_and_no_server_starts(project):
    code, record, err, launcher = warm_run(project, {"TFPIPE_WARM": "0"})
    assert code == 0 and record["pid"] == launcher, err
    time.sleep(2)
    folder = runtime_folder(project)
    assert not any(folder.glob("*.sock")) and not any(folder.glob("*.log"))
    folder.mkdir(exist_ok=True)
    folder.chmod(0o777)  # others could plant a socket there
    code, record, err, launcher = warm_run(project)
    assert code == 0 and record["pid"] == launcher, err
    time.sleep(2)
    assert not any(folder.glob("*.sock"))


def test_an_idle_server_exits(project):
    code, record, err, launcher = warm_run(project, {"TFPIPE_WARM_IDLE_S": "1"})
    assert code == 0, err
    wait_for_server(project)
    wait_for_server(project, present=False)  # no stage for a second: it removed its socket and exited
    code, record, err, launcher = warm_run(project, {"TFPIPE_WARM_IDLE_S": "1"})
    assert code == 0 and record["pid"] == launcher, err


def test_a_launcher_of_another_environment_is_not_served_by_the_server(project):
    warm_run(project)
    wait_for_server(project)
    code, record, err, launcher = warm_run(project, {"TF_NUM_INTEROP_THREADS": "1"})  # read by TensorFlow's import
    assert code == 0 and record["pid"] == launcher, err
    code, record, err, launcher = warm_run(project)
    assert code == 0 and record["pid"] != launcher, err


def test_the_key_follows_what_is_read_at_import_and_nothing_else(monkeypatch):
    key = warm.server_key()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")  # read when used, by the stage itself
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "another")
    assert warm.server_key() == key
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert warm.server_key() != key
