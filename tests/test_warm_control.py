"""The warm server's control of its stages (tfpipe/warm.py): signals reach the stage, Ctrl-Z stops both; a stopped
or hung server makes the launcher run its stage itself after a timeout, and the server never runs it too; a stage
dies with its supervisor and writes nothing afterwards; status and stop find the servers of a folder whose mode
changed, and an idle server in such a folder exits. The probe project is tests/warm_project.py's."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.warm_project import launch, make_project, server_pids, wait_for_server, warm_run


@pytest.fixture
def project(tmp_path):
    yield from make_project(tmp_path)


def sleeping_stage(project, tmp_path, seconds: float = 120) -> tuple[subprocess.Popen, int]:
    """A launcher whose stage runs (and sleeps) in a fork of the server: the launcher and the stage's pid."""
    warm_run(project)
    wait_for_server(project)
    pid_file = tmp_path / "stage.pid"
    process = launch(project, arguments=["sleep", str(pid_file), str(seconds)])
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    stage = int(pid_file.read_text())
    assert stage != process.pid
    return process, stage


def wait_gone(pid: int, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, f"{what} (pid {pid}) is still there"
        time.sleep(0.1)


def wait_for_status(pid: int, wanted: set[str]) -> None:
    deadline = time.monotonic() + 30
    while psutil.Process(pid).status() not in wanted:
        assert time.monotonic() < deadline, f"process {pid} is {psutil.Process(pid).status()}, not {wanted}"
        time.sleep(0.1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_signal_to_the_launcher_reaches_the_stage(project, tmp_path, signum):
    process, stage = sleeping_stage(project, tmp_path)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    if signum == signal.SIGINT:  # the stage's sentence (no traceback), its hint, and Python's exit status for it
        assert "interrupted (Ctrl-C)" in err and "Traceback" not in err and process.returncode == -signal.SIGINT
    else:
        assert process.returncode == -signum
    wait_gone(stage, f"the stage, after its launcher's {signum!r}")


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


def test_a_stopped_server_is_passed_over_and_never_runs_the_stage_too(project, tmp_path):
    warm_run(project)
    wait_for_server(project)
    (server,) = server_pids(project)
    log = tmp_path / "runs.log"
    psutil.Process(server).suspend()  # kill -STOP
    try:
        start = time.monotonic()
        run = warm_run(project, arguments=["log", str(log)])
        assert time.monotonic() - start < 10  # seen as stopped: no need to wait for the timeout
        assert run["code"] == 0 and run["pid"] == run["launcher"]
        assert "the warm server is stopped, or gave no answer in 30 s: the stage runs here" in run["stderr"]
    finally:
        psutil.Process(server).resume()
    time.sleep(2)  # the server now accepts the abandoned request: its fork must not run the stage
    assert log.read_text().split() == [str(run["pid"])]
    run = warm_run(project, arguments=["log", str(log)])
    assert run["pid"] != run["launcher"] and len(log.read_text().split()) == 2


def test_a_server_that_never_answers_costs_the_timeout_then_the_stage_runs_here(project):
    warm_run(project)
    wait_for_server(project)
    (path,) = Path(project.env["TFPIPE_WARM_DIR"]).glob("*.sock")
    path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:  # accepts, reads, never answers
        silent.bind(str(path))
        silent.listen()
        start = time.monotonic()
        run = warm_run(project, {"TFPIPE_WARM_TIMEOUT_S": "1"})  # allow-listed: the same key
        assert 1 <= time.monotonic() - start < 15
    assert run["code"] == 0 and run["pid"] == run["launcher"]
    assert "gave no answer in 1 s: the stage runs here" in run["stderr"]


def test_a_stage_dies_with_its_supervisor_and_writes_nothing_later(project, tmp_path):
    process, stage = sleeping_stage(project, tmp_path, seconds=3)
    supervisor = psutil.Process(stage).ppid()
    assert supervisor not in (process.pid, *server_pids(project))
    process.send_signal(signal.SIGSTOP)  # the launcher cannot act: the stage goes by itself (PR_SET_PDEATHSIG)
    psutil.Process(supervisor).kill()
    wait_gone(stage, "the stage of a killed supervisor", seconds=5)
    process.send_signal(signal.SIGCONT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1 and "the warm server's fork that ran it was killed" in err
    time.sleep(4)  # past the end of its sleep
    assert not (tmp_path / "stage.pid.late").exists()


def test_status_and_stop_find_the_servers_of_a_folder_whose_mode_changed(project, tmp_path):
    process, stage = sleeping_stage(project, tmp_path)  # a busy server does not leave
    folder = Path(project.env["TFPIPE_WARM_DIR"])
    folder.chmod(0o755)
    (server,) = server_pids(project)

    def tool(command: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "tfpipe.warm", command], env=project.env, capture_output=True, text=True
        ).stdout

    status = tool("status")
    assert f"1 warm server(s) in {folder}: [{server}]" in status and "no stage uses this folder" in status
    assert tool("stop") == "stopped 1 warm server(s)\n"
    wait_gone(server, "the stopped server")
    process.send_signal(signal.SIGTERM)  # its stage is the launcher's still, and goes with it
    process.communicate(timeout=60)
    wait_gone(stage, "the stage")


def test_an_idle_server_whose_folder_turns_unsafe_exits(project):
    warm_run(project)
    wait_for_server(project)
    (server,) = server_pids(project)
    Path(project.env["TFPIPE_WARM_DIR"]).chmod(0o777)
    wait_gone(server, "a server in an unsafe folder")
