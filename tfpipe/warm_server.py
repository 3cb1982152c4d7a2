"""The warm server of tfpipe/warm.py: started detached by the first launcher of its key that found none, with that
launcher's interpreter options, environment, import path and process attributes. It imports PRELOAD (recording
every file those imports opened and every top-level name they looked up), listens on <runtime folder>/<key>.sock,
and for each launcher forks a supervisor, which forks the stage (tfpipe/warm_stage.py makes it the launcher's
process and checks it); it exits after TFPIPE_WARM_IDLE_S seconds (default 300) with no stage running, when its
folder turns unsafe or its socket is taken, and when a fork found it stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import select
import signal
import socket
import sys
import time

from tfpipe import warm, warm_facts, warm_stage

# What the stages import, in the order they need it: the server listens once the first group is in, and imports
# the others between requests.
PRELOAD = (
    ("numpy", "pandas", "tensorflow", "tf_keras", "mlflow", "mlflow.tracking", "PIL.Image"),
    ("sklearn.svm", "sklearn.decomposition", "sklearn.model_selection", "sklearn.metrics"),
    ("tensorflow_model_optimization", "cleanlab.filter", "matplotlib.pyplot", "great_expectations"),
)
IDLE_SECONDS = 300.0
REQUEST_SECONDS = 30.0  # a launcher that has not sent its request, or its go, by then is dropped
LOCK_SECONDS = 10.0  # a retiring server's lock is released within this
STAGE_MODULE = re.compile(r"components\.[a-z_][a-z0-9_]*")
RETIRE = 75  # a supervisor's exit status: its fork found the server stale, so it stops serving


def serve(key: str, launcher: dict, idle_seconds: float) -> dict | None:
    """The server's loop; returns only in a forked stage, with its request (everything else exits in here)."""
    folder = warm.runtime_dir()
    parsed = warm_facts.interpreter_options(sys.orig_argv, "-c")
    mine, facts = warm_facts.server_key(parsed[0] if parsed else [], list(sys.path))  # its path is the tail
    if folder is None or key != mine:
        mine_digest = warm_facts.digest(facts)
        differing = [
            f"{part}.{name}"
            for part in ("process", "env")
            for name in warm_facts.differences(launcher.get(part, {}), mine_digest[part])
        ] + warm_facts.differences(launcher, mine_digest)
        warm_stage.log(f"not serving: key {key} is not this process's {mine} ({differing}) or no safe folder")
        return None
    lock = _lock(folder / f"{key}.lock")
    if lock is None:
        return None  # another server has this key
    start = time.monotonic()
    groups = preload_groups()
    pending = [name for group in groups[1:] for name in group]
    for name in groups[0]:
        warm_stage.preload(name)
    path = folder / f"{key}.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = folder / f".{os.getpid()}.sock"
    staging.unlink(missing_ok=True)
    listener.bind(str(staging))
    listener.listen(64)
    os.replace(staging, path)  # launchers see a socket only once the first group is imported
    ours = path.stat().st_ino
    warm_stage.log(f"serving {path} (pid {os.getpid()}), first imports in {time.monotonic() - start:.1f} s")
    supervisors: set[int] = set()
    last_busy = time.monotonic()
    while True:
        readable, _, _ = select.select([listener], [], [], 0 if pending else 1.0)
        if _reap(supervisors):
            warm_stage.log(
                "a stage found this server stale (a file its imports read changed, or its attributes): exiting"
            )
            return _retire(path, ours)
        if readable:
            connection, _ = listener.accept()
            pid = os.fork()
            if pid == 0:  # the supervisor, and then the stage: neither serves
                listener.close()
                lock.close()
                return _supervise(connection, key)
            connection.close()
            supervisors.add(pid)
            last_busy = time.monotonic()
        elif pending:
            warm_stage.preload(pending.pop(0))
        elif supervisors:
            last_busy = time.monotonic()
        elif warm.runtime_dir() != folder or not _owns(path, ours):
            warm_stage.log("the runtime folder is no longer safe, or the socket is another's: exiting")
            return _retire(path, ours)
        elif time.monotonic() - last_busy > idle_seconds:
            warm_stage.log(f"idle for {idle_seconds:.0f} s: exiting")
            return _retire(path, ours)


def _supervise(connection: socket.socket, key: str) -> dict | None:
    """In a fork of the server: receives the launcher's request, forks the stage (returns its request there),
    answers with the stage's pid once the stage is ready (or why it will not run), hands it the launcher's stdin,
    stdout and stderr, which come with the launcher's go, and reports its exit status, or kills it if the launcher
    dies. A launcher that gave up before its go (its timeout) sent no descriptor: none is held open for it."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    connection.settimeout(REQUEST_SECONDS)
    try:
        request, _ = warm.receive(connection)
    except OSError:
        os._exit(0)
    if request is None or not STAGE_MODULE.fullmatch(str(request.get("module"))):
        os._exit(0)  # only a stage's module runs here, never a name of the request's choosing
    if request.get("key") != key:
        _answer(connection, {"cold": "the server's key is not the launcher's"})
        os._exit(0)
    ready_read, ready_write = os.pipe()
    go, stage_go = socket.socketpair()
    supervisor = os.getpid()
    pid = os.fork()
    if pid == 0:
        connection.close()
        go.close()
        os.close(ready_read)
        return warm_stage.become_stage(request, supervisor, ready_write, stage_go)
    os.close(ready_write)
    stage_go.close()
    with os.fdopen(ready_read, "rb") as ready:
        answer = json.loads(ready.read() or b'{"cold": "the fork died while it set up", "retire": true}')
    if answer:  # why it will not run: it has exited without running anything
        os.waitpid(pid, 0)
        _answer(connection, answer)
        os._exit(RETIRE if answer.get("retire") else 0)
    pidfd = os.pidfd_open(pid)
    try:
        warm.send(connection, {"pid": pid})
        message, fds = warm.receive(connection, want_fds=3)
    except OSError:
        message, fds = None, []
    if not message or len(fds) != 3:  # the launcher gave up (its timeout) or died: the stage never starts
        _end(pid)
        os._exit(0)
    socket.send_fds(go, [b"g"], fds)
    for fd in fds:
        os.close(fd)
    go.close()
    connection.settimeout(None)
    while True:
        readable, _, _ = select.select([connection, pidfd], [], [])
        if pidfd in readable:
            _, status = os.waitpid(pid, 0)
            reply = (
                {"signal": os.WTERMSIG(status)}
                if os.WIFSIGNALED(status)
                else {"exit": os.waitstatus_to_exitcode(status)}
            )
            _answer(connection, reply)
            os._exit(0)
        if not connection.recv(1):
            # The launcher vanished without a status: only SIGKILL (or a crash) does that, every other signal is
            # relayed. Its stage goes the same way, as if it had been the process killed.
            _end(pid)
            os._exit(0)


def _answer(connection: socket.socket, message: dict) -> None:
    with contextlib.suppress(OSError):
        warm.send(connection, message)


def _end(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _lock(path) -> object | None:
    """This key's lock, held for the server's life and naming its pid; None if another server holds it (a retiring
    one gets LOCK_SECONDS to let go)."""
    lock = open(path, "a+")  # noqa: SIM115  held for the server's life
    deadline = time.monotonic() + LOCK_SECONDS
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() > deadline:
                lock.close()
                return None
            time.sleep(0.2)
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def _owns(path, ours: int) -> bool:
    try:
        return path.stat().st_ino == ours
    except OSError:
        return False


def _retire(path, ours: int) -> None:
    if _owns(path, ours):  # not yet replaced by a newer server's: no launcher finds it
        with contextlib.suppress(OSError):
            path.unlink()
    return None


def preload_groups() -> tuple[tuple[str, ...], ...]:
    """PRELOAD, or TFPIPE_WARM_PRELOAD's comma-separated modules (one group; empty: none)."""
    listed = os.environ.get("TFPIPE_WARM_PRELOAD")
    if listed is None:
        return PRELOAD
    return (tuple(name.strip() for name in listed.split(",") if name.strip()),)


def _reap(supervisors: set[int]) -> bool:
    """Reaps the supervisors that exited; True if one says the server is stale."""
    stale = False
    for pid in list(supervisors):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            supervisors.discard(pid)
            stale |= os.WIFEXITED(status) and os.WEXITSTATUS(status) == RETIRE
    return stale


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit("usage: python -m tfpipe.warm_server KEY (started by a stage: tfpipe/warm.py)")
    setup = json.loads(os.environ.pop(warm_facts.SERVER_SETUP, "{}"))
    if "path" in setup:
        sys.path[:] = setup["path"]  # the launcher's, less its script directory: the stage's is added in its fork
    warm_stage.record_imports()
    request = serve(argv[0], setup.get("facts", {}), float(os.environ.get("TFPIPE_WARM_IDLE_S", IDLE_SECONDS)))
    if request is not None:  # this process is now the stage: run it as `python -m` would
        warm_stage.run_as_main(request["module"])
