"""The warm server of tfpipe/warm.py: `python -m tfpipe.warm_server <key>`, started detached by the first stage that
found none. It imports PRELOAD, listens on <runtime folder>/<key>.sock, and for each launcher forks a supervisor, which
forks the stage; it exits after TFPIPE_WARM_IDLE_S seconds (default 300) with no stage running.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import re
import select
import signal
import socket
import sys
import time

from tfpipe.warm import CHILD_MARK, ROOT, receive, runtime_dir, send, server_key

# What the stages import, in the order they need it: the server listens once the first group is in, and imports
# the others between requests.
PRELOAD = (
    ("numpy", "pandas", "tensorflow", "tf_keras", "mlflow", "mlflow.tracking", "PIL.Image"),
    ("sklearn.svm", "sklearn.decomposition", "sklearn.model_selection", "sklearn.metrics"),
    ("tensorflow_model_optimization", "cleanlab.filter", "matplotlib.pyplot", "great_expectations"),
)
IDLE_SECONDS = 300.0
STAGE_MODULE = re.compile(r"components\.[a-z_][a-z0-9_]*")


def serve(key: str, idle_seconds: float) -> dict | None:
    """The server's loop; returns only in a forked stage, with its request (everything else exits in here)."""
    folder = runtime_dir()
    if folder is None or key != server_key():
        _log(f"not serving: key {key} is not this process's {server_key()} (or no safe runtime folder)")
        return None
    lock = open(folder / f"{key}.lock", "a+")  # noqa: SIM115  held for the server's life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return None  # another server has this key
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    start = time.monotonic()
    groups = preload_groups()
    pending = [name for group in groups[1:] for name in group]
    for name in groups[0]:
        _preload(name)
    path = folder / f"{key}.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = folder / f".{os.getpid()}.sock"
    staging.unlink(missing_ok=True)
    listener.bind(str(staging))
    listener.listen(64)
    os.replace(staging, path)  # launchers see a socket only once the first group is imported
    ours = path.stat().st_ino
    _log(f"serving {path} (pid {os.getpid()}), first imports in {time.monotonic() - start:.1f} s")
    supervisors: set[int] = set()
    last_busy = time.monotonic()
    while True:
        readable, _, _ = select.select([listener], [], [], 0 if pending else 1.0)
        _reap(supervisors)
        if readable:
            connection, _ = listener.accept()
            pid = os.fork()
            if pid == 0:  # the supervisor, and then the stage: neither serves
                listener.close()
                lock.close()
                return _supervise(connection)
            connection.close()
            supervisors.add(pid)
            last_busy = time.monotonic()
        elif pending:
            _preload(pending.pop(0))
        elif supervisors:
            last_busy = time.monotonic()
        elif time.monotonic() - last_busy > idle_seconds:
            with contextlib.suppress(OSError):
                if path.stat().st_ino == ours:  # not yet replaced by a newer server's: no launcher finds it
                    path.unlink()
            _log(f"idle for {idle_seconds:.0f} s: exiting")
            return None


def _supervise(connection: socket.socket) -> dict | None:
    """In a fork of the server: receives the launcher's request and its stdin, stdout and stderr, forks the stage
    (returns its request there), and reports the stage's exit status, or stops the stage if the launcher dies."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    request, fds = receive(connection, want_fds=3)
    if request is None or len(fds) != 3 or not STAGE_MODULE.fullmatch(str(request.get("module"))):
        os._exit(0)  # only a stage's module runs here, never a name of the request's choosing
    pid = os.fork()
    if pid == 0:
        connection.close()
        _become_stage(request, fds)
        return request
    for fd in fds:
        os.close(fd)
    try:
        send(connection, {"pid": pid})
    except OSError:
        pass
    pidfd = os.pidfd_open(pid)
    while True:
        readable, _, _ = select.select([connection, pidfd], [], [])
        if pidfd in readable:
            _, status = os.waitpid(pid, 0)
            reply = (
                {"signal": os.WTERMSIG(status)}
                if os.WIFSIGNALED(status)
                else {"exit": os.waitstatus_to_exitcode(status)}
            )
            with contextlib.suppress(OSError):
                send(connection, reply)
            os._exit(0)
        if not connection.recv(1):
            # The launcher vanished without a status: only SIGKILL (or a crash) does that, every other signal is
            # relayed. Its stage goes the same way, as if it had been the process killed.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os._exit(0)


def _become_stage(request: dict, fds: list[int]) -> None:
    """Turns this fork into the launcher's process as `python -m` would have started it: its stdio, directory,
    environment, argv and sys.path; signals as at start-up; fresh random state; no project module imported."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[CHILD_MARK] = "1"
    sys.argv[:] = request["argv"]
    sys.path[:] = request["path"]
    for stream in (sys.stdout, sys.stderr):  # as Python sets them up: line-buffered on a terminal
        stream.reconfigure(
            line_buffering=stream is sys.stderr or stream.isatty(), write_through="PYTHONUNBUFFERED" in os.environ
        )
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # a fresh process's unseeded global state, not the server's (shared by every fork)
    project = {path.name for path in ROOT.iterdir() if (path / "__init__.py").is_file()}
    for name in [name for name in sys.modules if name.split(".")[0] in project]:
        del sys.modules[name]  # the stage imports its own checkout's code


def preload_groups() -> tuple[tuple[str, ...], ...]:
    """PRELOAD, or TFPIPE_WARM_PRELOAD's comma-separated modules (one group; empty: none)."""
    listed = os.environ.get("TFPIPE_WARM_PRELOAD")
    if listed is None:
        return PRELOAD
    return (tuple(name.strip() for name in listed.split(",") if name.strip()),)


def _preload(name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception as error:  # noqa: BLE001  a stage that needs it imports it (and fails) itself
        _log(f"could not preload {name}: {error!r}")


def _reap(supervisors: set[int]) -> None:
    for pid in list(supervisors):
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
        supervisors.discard(pid)


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} tfpipe.warm[{os.getpid()}]: {message}", flush=True)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m tfpipe.warm_server KEY (started by a stage: tfpipe/warm.py)")
    request = serve(argv[0], float(os.environ.get("TFPIPE_WARM_IDLE_S", IDLE_SECONDS)))
    if request is not None:  # this process is now the stage: run it as `python -m` would
        import runpy

        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
