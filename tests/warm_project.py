"""A project of its own for the warm server's tests (tests/test_warm.py, tests/test_warm_control.py): a copy of
tfpipe/ and one stage, components/fake, a probe that prints its process facts as JSON on its first line of output."""

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
from typing import NamedTuple

from tfpipe import warm

ROOT = Path(__file__).resolve().parents[1]

STAGE = """
import json, os, sys, time
from pathlib import Path

MARKER = "first"


def facts() -> dict:
    import logging, resource, signal, tempfile, warnings

    import tfpipe.redaction as redaction

    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    status = {name: value.strip() for name, value in status.items()}
    for mask in ("SigIgn", "SigBlk", "SigCgt"):  # signals 1-31: 32 and 33 are glibc's own, set up with a first thread
        status[mask] = int(status[mask], 16) & 0x7FFFFFFF
    path = Path("written.txt")
    path.write_text("x")
    written = oct(path.stat().st_mode & 0o777)
    path.unlink()
    descriptors = []
    for number in sorted(map(int, os.listdir("/proc/self/fd"))):
        try:
            os.fstat(number)
            descriptors.append(number)
        except OSError:
            pass  # the listing's own
    extra = {}
    if os.environ.get("FAKECONFIG"):
        import fakeconfig, fakeshadow

        extra["fakeconfig"] = [fakeconfig.VALUE, fakeshadow.WHERE]
    if os.environ.get("FAKE_MPL"):
        import matplotlib

        extra["matplotlib"] = [matplotlib.matplotlib_fname(), matplotlib.rcParams["backend"]]
    project = {name: getattr(module, "__file__", None) for name, module in sys.modules.items()
               if name.split(".")[0] in ("tfpipe", "components")}
    return {
        "umask": status["Umask"],
        "status": {name: status.get(name) for name in ("Uid", "Gid", "Groups", "CapEff", "CapBnd", "NoNewPrivs",
                   "Seccomp", "SigIgn", "SigBlk", "SigCgt", "Cpus_allowed_list", "Mems_allowed_list")},
        "rlimits": {name: resource.getrlimit(getattr(resource, name)) for name in dir(resource)
                    if name.startswith("RLIMIT_")},
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "affinity": sorted(os.sched_getaffinity(0)),
        "cgroup": Path("/proc/self/cgroup").read_text(),
        "oom_score_adj": Path("/proc/self/oom_score_adj").read_text(),
        "tempdir": tempfile.gettempdir(),
        "tz": [os.environ.get("TZ"), list(time.tzname), time.timezone],
        "flags": list(sys.flags),
        "warnoptions": sys.warnoptions,
        "xoptions": sys._xoptions,
        "warnings": [repr(entry) for entry in warnings.filters],
        "env": {name: os.environ.get(name) for name in ("KERAS_HOME", "MPLBACKEND", "OPENBLAS_NUM_THREADS",
                "TMPDIR", "TZ", "DVC_STAGE")},
        "environ": {name: value for name, value in os.environ.items() if name != "TFPIPE_WARM"},
        "signals": {number: repr(signal.getsignal(number)) for number in sorted(signal.valid_signals())
                    if number < 32},
        "descriptors": descriptors,
        "stdio": [sys.stdout.line_buffering, sys.stdout.write_through, sys.stderr.line_buffering,
                  sys.stderr.write_through, sys.stdout.encoding, sys.stdout.errors, sys.stdin.encoding],
        "argv": sys.argv,
        "orig_argv": sys.orig_argv,
        "path": sys.path,
        "cwd": os.getcwd(),
        "main_globals": sorted(vars(sys.modules["__main__"])),
        "project_modules": project,
        "redaction": [redaction.__file__, getattr(redaction, "MARKER", None),
                      logging.getLogRecordFactory().__code__.co_filename, sys.excepthook.__code__.co_filename],
        "marker": MARKER,
        "written_mode": written,
        **extra,
    }


def main():
    mode, arguments = (sys.argv[1:] or ["ok"])[0], sys.argv[2:]  # arguments, not variables: those are keyed
    print(json.dumps({"pid": os.getpid(), "facts": facts()}), flush=True)
    if mode == "log":
        with open(arguments[0], "a") as log:
            log.write(f"{os.getpid()}\\n")
    if mode == "fail":
        raise ValueError("fake: bad value 'x' for train.epochs in params.yaml (expected an integer)")
    if mode == "exit3":
        sys.exit(3)
    if mode == "stdin":
        print(sys.stdin.read().upper(), flush=True)
    if mode == "sleep":
        Path(arguments[0]).write_text(str(os.getpid()))
        time.sleep(float(arguments[1]))
        Path(arguments[0] + ".late").write_text("written after the sleep")
"""
MAIN = """
from tfpipe import warm


def main():
    from components.fake.stage import main

    main()


warm.run_stage("fake", main)
"""


class Project(NamedTuple):
    folder: Path
    env: dict


def make_project(tmp_path: Path):
    """A project with one stage, a copy of tfpipe/ and dvc.yaml, and its own runtime folder for servers (stopped at
    the end)."""
    folder = tmp_path / "project"
    (folder / "components/fake").mkdir(parents=True)
    shutil.copytree(ROOT / "tfpipe", folder / "tfpipe", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")  # tfpipe.paths reads the stages' paths from it
    (folder / "components/__init__.py").write_text("")
    (folder / "components/fake/__init__.py").write_text("")
    (folder / "components/fake/__main__.py").write_text(MAIN)
    (folder / "components/fake/stage.py").write_text(STAGE)
    runtime = Path(tempfile.mkdtemp(prefix="tfpipe-test-", dir="/tmp"))  # short: a socket's path has 107 bytes
    env = {
        **os.environ,
        "TFPIPE_WARM": "1",
        "TFPIPE_WARM_DIR": str(runtime / "servers"),
        "TFPIPE_WARM_PRELOAD": "json",
        "TFPIPE_WARM_IDLE_S": "120",
    }
    env.pop("PYTHONPATH", None)  # the project's own tfpipe, from its directory
    env.pop("PYTHONUNBUFFERED", None)  # the interpreter's -u is one of the facts
    yield Project(folder, env)
    subprocess.run([sys.executable, "-m", "tfpipe.warm", "stop"], env=env, cwd=folder, capture_output=True)
    shutil.rmtree(runtime, ignore_errors=True)


def launch(
    project: Project, extra: dict | None = None, options=(), preexec=None, arguments=(), **kwargs
) -> subprocess.Popen:
    """`python [options] -m components.fake [arguments]`: the probe; its first argument is its mode (ok, fail, exit3,
    stdin, sleep PID_FILE SECONDS, log FILE)."""
    environment = {**project.env, **(extra or {})}
    return subprocess.Popen(
        [sys.executable, *options, "-m", "components.fake", *arguments],
        cwd=project.folder,
        env={name: value for name, value in environment.items() if value is not None},
        preexec_fn=preexec,
        **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **kwargs},
    )


def finish(process: subprocess.Popen, stdin: str | None = None) -> dict:
    out, err = process.communicate(stdin, timeout=60)
    record = json.loads(out.splitlines()[0]) if out else {}
    return {
        "code": process.returncode,
        "launcher": process.pid,
        "pid": record.get("pid"),
        "facts": record.get("facts"),
        "stdout": out,
        "stderr": err,
    }


def warm_run(project: Project, extra: dict | None = None, options=(), preexec=None, arguments=()) -> dict:
    run = finish(launch(project, extra, options, preexec, arguments))
    assert run["facts"] is not None, run["stderr"]
    return run


def wait_for_server(project: Project, present: bool = True) -> None:
    folder = Path(project.env["TFPIPE_WARM_DIR"])
    deadline = time.monotonic() + 60
    while any(folder.glob("*.sock")) != present:
        assert time.monotonic() < deadline, f"the server's socket never {'appeared' if present else 'went'}"
        time.sleep(0.1)


def wait_for_servers(project: Project, count: int) -> None:
    folder = Path(project.env["TFPIPE_WARM_DIR"])
    deadline = time.monotonic() + 60
    while len(list(folder.glob("*.sock"))) < count:
        assert time.monotonic() < deadline, f"fewer than {count} servers listen"
        time.sleep(0.1)


def server_pids(project: Project) -> list[int]:
    return warm.servers(Path(project.env["TFPIPE_WARM_DIR"]))


def stop_servers(project: Project) -> None:
    for pid in server_pids(project):
        os.kill(pid, signal.SIGTERM)
