"""A warm process for the stages: TensorFlow, Keras, MLflow and the rest are imported once, and each stage runs in a
fork of that process instead of importing them again (4-8 s a stage on 2 cores: a third of a forced `dvc repro` of
the demo beside its training). The idea of Gradle's daemon and Rails' Spring, for `python -m components.<stage>`.

    python -m components.train     # dvc.yaml's command, unchanged: the launcher
      -> a warm server for this interpreter, these packages and this environment is listening: it forks a copy of
         itself, which takes the launcher's working directory, environment, argv, sys.path and its stdin, stdout and
         stderr (passed over the socket), drops the project modules it had, and runs the stage as `python -m` would;
         the launcher relays signals to it and exits as it exited (its code, or its signal).
      -> none is listening: the stage runs here, as it always did, and a server is started in the background
         (detached: its own session, its output in a log file) for the stages after it.

What is imported ahead is third-party only (never the project's code, which each stage imports fresh from its own
checkout, so one server serves every copy of the repository and an edit is never stale). The server is keyed by the
interpreter, its site-packages (a `pip install` makes a new key), its code (CODE), and the environment variables
read at import time (TF_*, CUDA*, XLA_*, PYTHON*, ...): any change means another server. It exits after
TFPIPE_WARM_IDLE_S seconds (default 300) with no stage running. TFPIPE_WARM=0 turns it all off (every stage
imports for itself, as before); TFPIPE_WARM_PRELOAD=a,b,c imports those modules instead of warm_server.PRELOAD;
`python -m tfpipe.warm status|stop` lists or stops this user's servers.

Why this is safe to fork: the server imports modules and does nothing else (no TensorFlow context, no device,
no thread of its own; the native threads TensorFlow starts at import are idle pools that a child re-creates), and
it forks from its only Python thread. Each request gets a supervisor (a fork that waits for the stage and
reports its status, and stops it if the launcher dies) and the stage (a fork of the supervisor).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

PROTOCOL = 1
CHILD_MARK = "TFPIPE_WARM_CHILD"  # set only in a stage forked by the server, for its __main__; removed at once
# Environment variables read at import time by Python, TensorFlow, XLA, CUDA or OpenMP: a server serves only
# launchers that agree with it on all of them (MLflow's and the rest are read when used: the stage's own).
IMPORT_TIME_ENV = ("PYTHON", "TF_", "CUDA", "XLA_", "OMP_", "KMP_", "MKL", "LD_", "TFPIPE_WARM")
SOCKET_PATH_MAX = 107  # Linux: sun_path is 108 bytes with its terminating NUL
ROOT = Path(__file__).resolve().parents[1]
CODE = ("warm.py", "warm_server.py")  # a server runs only launchers of its own code
SERVER_MAIN = (
    "import runpy, sys; sys.path.insert(0, {root!r}); runpy.run_module('tfpipe.warm_server', run_name='__main__')"
)


def enabled() -> bool:
    return os.environ.get("TFPIPE_WARM", "1").lower() not in ("0", "false", "no", "off") and hasattr(os, "pidfd_open")


def runtime_dir() -> Path | None:
    """This user's folder for the servers' sockets, locks and logs (TFPIPE_WARM_DIR, else tfpipe-warm-<uid> in
    XDG_RUNTIME_DIR or the temporary folder; mode 0700, owned by the user), or None where it is not safe to use
    (another owner, wider permissions, a path too long for a socket): then no stage uses a server."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    folder = Path(os.environ.get("TFPIPE_WARM_DIR") or base / f"tfpipe-warm-{os.getuid()}")
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        status = folder.lstat()
    except OSError:
        return None
    if not folder.is_dir() or folder.is_symlink() or status.st_uid != os.getuid() or status.st_mode & 0o077:
        return None
    if len(os.fsencode(folder)) > SOCKET_PATH_MAX - 32:  # /<key>.sock must fit in a socket address
        return None
    return folder


def server_key() -> str:
    """What a server must share with a launcher to run its stage: interpreter, installed packages, this file, the
    environment read at import time."""
    site = sorted(entry for entry in sys.path if entry.endswith(("site-packages", "dist-packages")))
    facts = {
        "protocol": PROTOCOL,
        "python": [os.path.realpath(sys.executable), sys.version, sys.flags.optimize, sys.flags.isolated],
        "packages": {entry: _mtime(entry) for entry in site},
        "warm": [hashlib.sha256((ROOT / "tfpipe" / name).read_bytes()).hexdigest() for name in CODE],
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(IMPORT_TIME_ENV) and k != CHILD_MARK},
        "uid": os.getuid(),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------------- messages


def send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    payload = struct.pack("!I", len(data)) + data
    if fds:
        sent = socket.send_fds(sock, [payload], fds)
        payload = payload[sent:]
    sock.sendall(payload)


def receive(sock: socket.socket, want_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message (None at end of stream) and the file descriptors that came with it."""
    buffer, fds = b"", []
    while len(buffer) < 4 or len(buffer) < 4 + struct.unpack("!I", buffer[:4])[0]:
        if want_fds and not fds:
            chunk, fds, _, _ = socket.recv_fds(sock, 65536, want_fds)
        else:
            chunk = sock.recv(65536)
        if not chunk:
            for fd in fds:
                os.close(fd)
            return None, []
        buffer += chunk
    size = struct.unpack("!I", buffer[:4])[0]
    return json.loads(buffer[4 : 4 + size]), fds


# ---------------------------------------------------------------------------------------------------- launcher


def run_stage(stage: str, main: Callable[[], None]) -> None:
    """A stage's `__main__`: in a server's fork, or where no server can serve, runs main here (tfpipe.outputs'
    run_stage); else the stage runs in a fork of a warm server and this process exits as that one did."""
    if os.environ.pop(CHILD_MARK, None) is None and enabled():
        folder = runtime_dir()
        if folder is not None:
            key = server_key()
            delegate(folder / f"{key}.sock", stage)
            start_server(folder, key)  # none answered: one for the stages after this one
    from tfpipe import outputs

    outputs.run_stage(stage, main)


def delegate(socket_path: Path, stage: str) -> None:
    """Runs `python -m components.<stage>` in a fork of the server at socket_path and exits as it did; returns
    only if no server answered (nothing has run)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(socket_path))
        request = {
            "module": f"components.{stage}",
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "argv": sys.argv,
            "path": sys.path,
        }
        send(sock, request, [0, 1, 2])
        reply, _ = receive(sock)
    except OSError:
        sock.close()
        return
    if reply is None or "pid" not in reply:  # the server went away before the stage started: run it here
        sock.close()
        return
    pid = reply["pid"]

    def relay(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def suspend(_signum, _frame):
        """Ctrl-Z: the stage stops, then this process, as the shell expects; `fg` or `bg` continues both. Both by
        SIGSTOP: a SIGTSTP at its default action is dropped in a process group without a terminal (the stage's
        always, this one's under some runners)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)

    def resume(_signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, relay)
    signal.signal(signal.SIGTSTP, suspend)
    signal.signal(signal.SIGCONT, resume)
    status, _ = receive(sock)  # a signal's handler runs and the read goes on (PEP 475)
    sys.stdout.flush()
    if status is None:
        sys.stderr.write(
            f"{stage}: the warm server's copy (pid {pid}) ended without a status; TFPIPE_WARM=0 runs the "
            "stage without it\n"
        )
        os._exit(1)
    if "signal" in status:
        signal.signal(status["signal"], signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [status["signal"]])
        os.kill(os.getpid(), status["signal"])
    os._exit(status.get("exit", 1))


def start_server(folder: Path, key: str) -> None:
    """Starts tfpipe/warm_server.py's main detached (its own session; output in <key>.log): it outlives this
    stage and serves the next ones."""
    with contextlib.suppress(OSError):
        log = open(folder / f"{key}.log", "ab")  # noqa: SIM115  handed to the server
        with log:
            subprocess.Popen(
                # From / (it pins no checkout: one server serves them all), with this project's tfpipe on its path.
                [sys.executable, "-c", SERVER_MAIN.format(root=str(ROOT)), key],
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )


def stop_all() -> int:
    """Stops this user's servers (SIGTERM to each lock holder); returns how many."""
    folder, stopped = runtime_dir(), 0
    for pid in _servers(folder) if folder else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            stopped += 1
    return stopped


def _servers(folder: Path) -> list[int]:
    """The pids of the live servers in folder: each holds its key's lock, which names its pid."""
    pids = []
    for lock_path in folder.glob("*.lock"):
        with open(lock_path) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
                continue  # nobody holds it: no server
            except OSError:
                pass
            with contextlib.suppress(ValueError):
                pids.append(int(lock.read().strip()))
    return pids


def main(argv: list[str]) -> None:
    command = argv[0] if argv else "status"
    if command == "stop":
        print(f"stopped {stop_all()} warm server(s)")
    elif command == "status":
        folder = runtime_dir()
        pids = _servers(folder) if folder else []
        print(
            f"{len(pids)} warm server(s) in {folder}: {pids}; this environment's key {server_key()}"
            f" ({'enabled' if enabled() else 'disabled: TFPIPE_WARM'})"
        )
    else:
        sys.exit("usage: python -m tfpipe.warm [status|stop]")


if __name__ == "__main__":
    main(sys.argv[1:])
