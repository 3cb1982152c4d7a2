"""The warm server (tfpipe/warm.py): opt-in, and a stage it runs is the stage a fresh `python -m` would have run. A
probe stage prints its process facts (umask, limits, priority, affinity, cgroup, temporary folder, time zone,
interpreter flags, environment, signals, descriptors, where its project modules came from, ...); under each way of
launching it, the facts of its warm run are those of its run with TFPIPE_WARM=0. A small project of its own (the
stage plus a copy of tfpipe/) stands in for the real one; its server imports only json, so each starts in a second.
Signals, Ctrl-Z, a stopped server, a killed supervisor and an unsafe folder are in tests/test_warm_control.py."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.warm_project import (
    finish,
    launch,
    make_project,
    server_pids,
    stop_servers,
    wait_for_server,
    wait_for_servers,
    warm_run,
)
from tfpipe import warm, warm_facts


@pytest.fixture
def project(tmp_path):
    yield from make_project(tmp_path)


def compare(project, extra=None, options=(), preexec=None, served=True) -> tuple[dict, bool]:
    """Runs the probe under the same conditions warm and cold (TFPIPE_WARM=0), after a server for the plain
    conditions has started: a launcher whose differences the fork adopts runs in a fork of that server; one whose
    differences are keyed runs itself and starts its own server, whose fork runs the next (if `served`). Asserts
    that every run's facts are the cold run's; returns them, and whether the plain server's fork ran it."""
    warm_run(project)
    wait_for_servers(project, 1)
    runs = [warm_run(project, extra, options, preexec)]
    adopted = runs[0]["pid"] != runs[0]["launcher"]
    if served and not adopted:
        wait_for_servers(project, 2)
        runs.append(warm_run(project, extra, options, preexec))
    cold = warm_run(project, {**(extra or {}), "TFPIPE_WARM": "0"}, options, preexec)
    assert cold["pid"] == cold["launcher"]
    assert (runs[-1]["pid"] != runs[-1]["launcher"]) == served, runs[-1]["stderr"]
    for run in runs:
        for name, fact in cold["facts"].items():
            assert run["facts"][name] == fact, f"{name}: warm {run['facts'][name]!r}, cold {fact!r}"
        assert run["facts"] == cold["facts"]
    return cold["facts"], adopted


def test_warm_is_opt_in_and_the_first_stage_starts_the_server(project):
    run = warm_run(project, {"TFPIPE_WARM": None})  # unset: off
    assert run["pid"] == run["launcher"]
    time.sleep(1)
    assert not any(Path(project.env["TFPIPE_WARM_DIR"]).glob("*.sock"))
    facts, adopted = compare(project, {"DVC_STAGE": "fake"})
    assert facts["env"]["DVC_STAGE"] == "fake" and adopted
    # An allow-listed variable (DVC's, per stage) may differ: the same server runs it, with the launcher's value.
    run = warm_run(project, {"DVC_STAGE": "other"})
    assert run["pid"] != run["launcher"] and run["facts"]["env"]["DVC_STAGE"] == "other"


def test_umask_and_the_modes_of_what_the_stage_writes(project):
    facts, adopted = compare(project, preexec=lambda: os.umask(0o077))
    assert facts["umask"] == "0077" and facts["written_mode"] == "0o600" and adopted


ADOPTED = {  # the fork takes them from the launcher
    "umask": lambda: os.umask(0o077),
    "ignored and blocked signals (nohup, a background job)": lambda: (
        signal.signal(signal.SIGHUP, signal.SIG_IGN),
        signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1}),
    ),
}
KEYED = {  # the server's key: a launcher that differs gets a server of its own
    "ulimit -n": lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)),
    "ulimit -s": lambda: resource.setrlimit(resource.RLIMIT_STACK, (4 << 20, resource.RLIM_INFINITY)),
    "nice": lambda: os.nice(5),
    "cpu affinity": lambda: os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]}),
    "oom_score_adj": lambda: Path("/proc/self/oom_score_adj").write_text("500"),
}


@pytest.mark.parametrize("condition", [*ADOPTED, *KEYED])
def test_process_attributes(project, condition):
    facts, adopted = compare(project, preexec={**ADOPTED, **KEYED}[condition])
    assert adopted == (condition in ADOPTED)
    assert facts != warm_run(project, {"TFPIPE_WARM": "0"})["facts"]  # the condition shows in the facts


def test_a_limited_address_space_runs_cold(project):
    """RLIMIT_AS would count every package the server imported: no fork, and no server, for such a launcher."""
    compare(project, preexec=lambda: resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30)), served=False)
    assert len(server_pids(project)) == 1  # the plain launcher's only


def test_cgroup(project, tmp_path):
    group = Path("/sys/fs/cgroup/unified") / f"tfpipe-test-{os.getpid()}-{tmp_path.name[-8:]}"
    try:
        group.mkdir()
    except OSError as error:
        pytest.skip(f"no cgroup of our own here: {error}")
    try:
        facts, adopted = compare(project, preexec=lambda: (group / "cgroup.procs").write_text(str(os.getpid())))
        assert group.name in facts["cgroup"] and not adopted
    finally:
        stop_servers(project)  # a cgroup goes once its processes have
        deadline = time.monotonic() + 30
        while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.2)
        group.rmdir()


def test_temporary_folder_and_time_zone(project, tmp_path):
    (tmp_path / "tmp").mkdir()
    facts, adopted = compare(project, {"TMPDIR": str(tmp_path / "tmp"), "TZ": "Asia/Tokyo"})
    assert facts["tempdir"] == str(tmp_path / "tmp") and facts["tz"][1] == ["JST", "JST"] and not adopted


def test_a_temporary_folder_the_servers_imports_looked_up_is_looked_up_again(project, tmp_path):
    """A package that asks tempfile.gettempdir() at import caches the answer in the server: TMPDIR did not exist
    then (the answer was /tmp); for the stage it does, and the stage's answer is TMPDIR, as a fresh process's."""
    library = tmp_path / "library"
    library.mkdir()
    (library / "faketemp.py").write_text("import tempfile\n\ntempfile.gettempdir()\n")
    extra = {"PYTHONPATH": str(library), "TMPDIR": str(tmp_path / "later"), "TFPIPE_WARM_PRELOAD": "json,faketemp"}
    warm_run(project, extra)
    wait_for_servers(project, 1)
    (tmp_path / "later").mkdir()
    warmed, cold = warm_run(project, extra), warm_run(project, {**extra, "TFPIPE_WARM": "0"})
    assert warmed["pid"] != warmed["launcher"] and warmed["facts"] == cold["facts"]
    assert cold["facts"]["tempdir"] == str(tmp_path / "later")


@pytest.mark.parametrize("options", [["-W", "error"], ["-X", "dev"], ["-B"], ["-u"], ["-O"]], ids=" ".join)
def test_interpreter_options(project, options):
    facts, adopted = compare(project, options=options)
    assert facts != warm_run(project, {"TFPIPE_WARM": "0"})["facts"] and not adopted


def test_a_terminal_on_stdout_makes_it_line_buffered_as_in_a_fresh_process(project):
    warm_run(project)
    wait_for_server(project)
    records = []
    for variables in ({}, {"TFPIPE_WARM": "0"}):
        controller, terminal = os.openpty()
        process = launch(project, variables, stdout=terminal)
        os.close(terminal)
        output = b""
        with contextlib.suppress(OSError):  # EIO once the process has closed the terminal
            while chunk := os.read(controller, 65536):
                output += chunk
        os.close(controller)
        process.wait(timeout=60)
        records.append(json.loads(output.decode().splitlines()[0]) | {"launcher": process.pid})
    warmed, cold = records
    assert warmed["pid"] != warmed["launcher"] and warmed["facts"]["stdio"] == cold["facts"]["stdio"]
    assert cold["facts"]["stdio"][0]  # line-buffered


def test_settings_libraries_read_at_import(project, tmp_path):
    """Keras reads KERAS_HOME, matplotlib MPLBACKEND, OpenBLAS OPENBLAS_NUM_THREADS as they are imported: a launcher
    whose settings differ is served by a server started with them, never by one that imported with others."""
    facts, adopted = compare(project, {"KERAS_HOME": str(tmp_path), "MPLBACKEND": "svg", "OPENBLAS_NUM_THREADS": "1"})
    assert facts["env"]["MPLBACKEND"] == "svg" and not adopted


def test_a_failing_stage_prints_what_a_fresh_process_prints(project):
    warm_run(project)
    wait_for_server(project)
    for mode, code in (("fail", 1), ("exit3", 3)):
        warmed = warm_run(project, arguments=[mode])
        cold = warm_run(project, {"TFPIPE_WARM": "0"}, arguments=[mode])
        assert warmed["pid"] != warmed["launcher"]
        assert warmed["code"] == cold["code"] == code
        assert warmed["stderr"] == cold["stderr"]  # the traceback, frame by frame, and run_stage's hint
    assert 'File "<frozen runpy>", line' in cold["stderr"] or mode == "exit3"


def test_the_stage_reads_the_launchers_stdin(project):
    warm_run(project)
    wait_for_server(project)
    process = launch(project, arguments=["stdin"], stdin=subprocess.PIPE)
    run = finish(process, "piped in\n")
    assert run["code"] == 0 and run["pid"] != run["launcher"]
    assert "PIPED IN" in run["stdout"]


def test_project_modules_come_from_the_stages_checkout_never_the_servers(project, tmp_path):
    """A second checkout with the same code shares the server; its edit to tfpipe/redaction.py (the log redaction
    every stage installs) is what its stage runs, and an edit to its stage is seen at once."""
    warm_run(project)
    wait_for_server(project)
    other = tmp_path / "other"
    shutil.copytree(project.folder, other, ignore=shutil.ignore_patterns("__pycache__"))
    redaction = other / "tfpipe/redaction.py"
    redaction.write_text(redaction.read_text() + '\nMARKER = "edited"\n')
    (other / "components/fake/stage.py").write_text(
        (other / "components/fake/stage.py").read_text().replace('"first"', '"edited"')
    )
    second = project._replace(folder=other)
    warmed, cold = warm_run(second), warm_run(second, {"TFPIPE_WARM": "0"})
    assert warmed["pid"] != warmed["launcher"] and warmed["facts"] == cold["facts"]
    assert warmed["facts"]["redaction"] == [str(redaction), "edited", str(redaction), str(redaction)]
    assert warmed["facts"]["marker"] == "edited"


def test_what_the_servers_imports_read_stale_or_shadowed_runs_cold(project, tmp_path):
    """A module the server imported reads a file at import (as Keras reads keras.json): when the file changes, the
    next stage runs cold and the server exits; a module of the same name in the stage's directory is the one a
    fresh process imports: that stage runs cold."""
    library = tmp_path / "library"
    library.mkdir()
    (library / "fakeconfig.py").write_text("import os\nVALUE = open(os.environ['FAKECONFIG']).read()\n")
    (library / "fakeshadow.py").write_text("WHERE = 'library'\n")
    config = tmp_path / "config.txt"
    config.write_text("one")
    extra = {"PYTHONPATH": str(library), "FAKECONFIG": str(config), "TFPIPE_WARM_PRELOAD": "json,fakeconfig,fakeshadow"}
    first = warm_run(project, extra)
    wait_for_servers(project, 1)
    (old,) = server_pids(project)
    warmed, cold = warm_run(project, extra), warm_run(project, {**extra, "TFPIPE_WARM": "0"})
    assert first["pid"] == first["launcher"] and warmed["pid"] != warmed["launcher"]
    assert warmed["facts"] == cold["facts"] and cold["facts"]["fakeconfig"] == ["one", "library"]
    config.write_text("two")
    warmed, cold = warm_run(project, extra), warm_run(project, {**extra, "TFPIPE_WARM": "0"})
    assert warmed["pid"] == warmed["launcher"] and warmed["facts"] == cold["facts"]
    assert cold["facts"]["fakeconfig"] == ["two", "library"]
    deadline = time.monotonic() + 30
    while old in server_pids(project):  # it exits; the launcher started a new one
        assert time.monotonic() < deadline, "the stale server did not exit"
        time.sleep(0.2)
    wait_for_servers(project, 1)
    warmed = warm_run(project, extra)
    assert warmed["pid"] != warmed["launcher"] and warmed["facts"] == cold["facts"]
    (project.folder / "fakeshadow.py").write_text("WHERE = 'project'\n")
    warmed, cold = warm_run(project, extra), warm_run(project, {**extra, "TFPIPE_WARM": "0"})
    assert warmed["pid"] == warmed["launcher"] and warmed["facts"] == cold["facts"]
    assert cold["facts"]["fakeconfig"] == ["two", "project"]


def test_a_matplotlibrc_in_the_stages_directory_is_read_as_by_a_fresh_process(project, tmp_path):
    """matplotlib looks for matplotlibrc in the working directory first when it is imported: the server imported it
    from /; a stage whose directory has one runs cold (the lookups of warm_stage.IMPORT_LOOKUPS)."""
    extra = {"TFPIPE_WARM_PRELOAD": "json,matplotlib", "FAKE_MPL": "1", "MPLCONFIGDIR": str(tmp_path / "mpl")}
    warm_run(project, extra)
    wait_for_servers(project, 1)
    warmed, cold = warm_run(project, extra), warm_run(project, {**extra, "TFPIPE_WARM": "0"})
    assert warmed["pid"] != warmed["launcher"] and warmed["facts"] == cold["facts"]
    (project.folder / "matplotlibrc").write_text("backend: svg\n")
    warmed, cold = warm_run(project, extra), warm_run(project, {**extra, "TFPIPE_WARM": "0"})
    assert warmed["pid"] == warmed["launcher"] and warmed["facts"] == cold["facts"]
    assert cold["facts"]["matplotlib"] == ["matplotlibrc", "svg"]  # found in the working directory
    (project.folder / "matplotlibrc").unlink()  # the stage's own file made it cold: the server is not stale
    warmed = warm_run(project, extra)
    assert warmed["pid"] != warmed["launcher"] and warmed["facts"]["matplotlib"][1] != "svg"


def test_a_server_changed_after_it_started_exits_and_its_stage_runs_cold(project):
    warm_run(project)
    wait_for_server(project)
    (server,) = server_pids(project)
    os.setpriority(os.PRIO_PROCESS, server, 7)  # renice of the server: not the launcher's priority any more
    run = warm_run(project)
    assert run["pid"] == run["launcher"] and run["facts"]["nice"] == os.getpriority(os.PRIO_PROCESS, 0)
    deadline = time.monotonic() + 30
    while server in server_pids(project):
        assert time.monotonic() < deadline, "the changed server did not exit"
        time.sleep(0.2)


def test_a_launcher_of_another_environment_is_not_served_by_the_server(project):
    warm_run(project)
    wait_for_server(project)
    run = warm_run(project, {"SOME_LIBRARY_SETTING": "1"})  # any variable but the allow-list: another server
    assert run["code"] == 0 and run["pid"] == run["launcher"], run["stderr"]
    run = warm_run(project)
    assert run["code"] == 0 and run["pid"] != run["launcher"], run["stderr"]


def test_the_key_is_the_whole_environment_but_the_allow_list(monkeypatch):
    def key():
        return warm_facts.server_key([], warm_facts.import_path())[0]

    first = key()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")  # read when used, by the stage itself
    monkeypatch.setenv("DVC_STAGE", "train")
    assert key() == first
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "another test")  # whether it is set is read at import, not its value
    assert key() == first
    for name in ("TF_ENABLE_ONEDNN_OPTS", "KERAS_HOME", "MPLBACKEND", "OPENBLAS_NUM_THREADS", "ANYTHING_ELSE"):
        monkeypatch.setenv(name, "0")
        assert key() != first, name
        monkeypatch.delenv(name)
    assert key() == first


def test_interpreter_options_are_read_from_the_command_line():
    options = warm_facts.interpreter_options
    assert options(["python", "-W", "error", "-Xdev", "-B", "-m", "components.train"], "-m") == (
        ["-W", "error", "-Xdev", "-B"],
        5,
    )
    assert options(["python", "components/train/__main__.py"], "-m") is None
    assert options(["python", "-c", "code"], "-m") is None


def test_a_request_for_anything_but_a_stage_runs_nothing(project):
    """The socket runs `components.<stage>` modules only: a request naming another module gets no process."""
    import socket

    warm_run(project)
    wait_for_server(project)
    (path,) = Path(project.env["TFPIPE_WARM_DIR"]).glob("*.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        request = {"module": "os", "key": path.stem, "cwd": "/", "env": {}, "argv": ["x"], "path0": None}
        warm.send(sock, request, [0, 1, 2])
        assert warm.receive(sock) == (None, [])  # the supervisor refused and closed: no stage, no pid


def test_an_unsafe_folder_turns_it_off(project):
    folder = Path(project.env["TFPIPE_WARM_DIR"])
    folder.mkdir(mode=0o700)
    folder.chmod(0o777)  # others could plant a socket there
    run = warm_run(project)
    assert run["code"] == 0 and run["pid"] == run["launcher"]
    time.sleep(1)
    assert not any(folder.glob("*.sock"))


def test_an_idle_server_exits(project):
    run = warm_run(project, {"TFPIPE_WARM_IDLE_S": "1"})
    wait_for_server(project)
    wait_for_server(project, present=False)  # no stage for a second: it removed its socket and exited
    run = warm_run(project, {"TFPIPE_WARM_IDLE_S": "1"})
    assert run["code"] == 0 and run["pid"] == run["launcher"]


def test_status_names_the_servers(project):
    warm_run(project)
    wait_for_server(project)
    status = subprocess.run(
        [sys.executable, "-m", "tfpipe.warm", "status"], cwd=project.folder, env=project.env, capture_output=True
    )
    assert f"1 warm server(s) in {project.env['TFPIPE_WARM_DIR']}: {server_pids(project)}" in status.stdout.decode()
