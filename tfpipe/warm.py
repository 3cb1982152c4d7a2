"""A warm process for the stages, opt-in (TFPIPE_WARM=1): TensorFlow, Keras, MLflow and the rest are imported once,
and each `python -m components.<stage>` (dvc.yaml's command, unchanged: the launcher) runs in a fork of that process
instead of importing them again (4-8 s a stage on 2 cores). Gradle's daemon and Rails' Spring, for the stages.

    a server for this launcher's key listens -> its fork becomes the stage as `python -m` would have started it
        (tfpipe/warm_stage.py); this process relays signals to it and exits as it exited (its code, or its signal)
    none listens -> the stage runs here, and a server starts in the background (tfpipe/warm_server.py: its own
        session, its output in a log) with this process's options, environment and attributes, for the next stages

The key (tfpipe/warm_facts.py) is all that a library could read while it is imported: interpreter, options, import
path and packages, the environment but a named allow-list, every inherited process attribute. Where the fork cannot
be the stage's process (its checks fail, no answer within TFPIPE_WARM_TIMEOUT_S) the stage runs here. Opt-in
because a fork still differs where none can follow: session and terminal, parent, its imports' output, the modules
it holds, the hash seed (docs/benchmarks.md, the warm server). `python -m tfpipe.warm status|stop` lists or stops
this user's servers; a server exits after TFPIPE_WARM_IDLE_S seconds (default 300) with no stage running.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tfpipe import warm_facts
from tfpipe.warm_facts import CHILD_MARK, SERVER_SETUP

SOCKET_PATH_MAX = 107  # Linux: sun_path is 108 bytes with its terminating NUL
ROOT = Path(__file__).resolve().parents[1]
HANDSHAKE_SECONDS = 30.0  # a server that has not started the stage by then (hung): the stage runs here
# The server's entry: tfpipe/warm_server.py of this checkout, loaded without tfpipe/__init__.py (no project code
# runs in the server but its own, whose hash is in the key).
SERVER_MAIN = (
    "import sys, types; package = types.ModuleType('tfpipe'); package.__path__ = [{folder!r}]; "
    "sys.modules['tfpipe'] = package; import tfpipe.warm_server; tfpipe.warm_server.main(sys.argv[1:])"
)
SERVER_MARK = "tfpipe.warm_server.main"  # in a server's command line: what `stop` checks before it signals a pid


def enabled() -> bool:
    return os.environ.get("TFPIPE_WARM", "0").lower() in ("1", "true", "yes", "on") and hasattr(os, "pidfd_open")


def runtime_folder() -> Path:
    """This user's folder for the servers' sockets, locks and logs: TFPIPE_WARM_DIR, else tfpipe-warm-<uid> in
    XDG_RUNTIME_DIR or the temporary folder."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
    return Path(os.environ.get("TFPIPE_WARM_DIR") or base / f"tfpipe-warm-{os.getuid()}")


def unsafe(folder: Path) -> str | None:
    """Why no stage may use `folder`'s servers (another owner, wider permissions than 0700, a symlink, a path too
    long for a socket), or None."""
    try:
        status = folder.lstat()
    except OSError as error:
        return f"cannot read it ({error.strerror})"
    if folder.is_symlink() or not folder.is_dir():
        return "it is not a folder"
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        return f"its owner or mode (uid {status.st_uid}, {status.st_mode & 0o777:04o}) lets others in"
    if len(os.fsencode(folder)) > SOCKET_PATH_MAX - 32:  # /<key>.sock must fit in a socket address
        return "its path is too long for a socket"
    return None


def runtime_dir() -> Path | None:
    """runtime_folder(), created with mode 0700, or None where it is not safe to use: then no stage uses a server."""
    folder = runtime_folder()
    with contextlib.suppress(OSError):
        folder.mkdir(mode=0o700, exist_ok=True)
    return None if unsafe(folder) else folder


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

NO_SERVER, NOT_SERVED, RETIRED = "no server", "not served", "retired"


def run_stage(stage: str, main: Callable[[], None]) -> None:
    """A stage's `__main__`: in a server's fork, or where no server may serve, runs main here (tfpipe.outputs'
    run_stage); else the stage runs in a fork of a warm server and this process exits as that one did."""
    if os.environ.pop(CHILD_MARK, None) is None and enabled():
        folder = runtime_dir()
        request = warm_facts.launch_request(stage) if folder is not None else None
        if request is not None:
            outcome = delegate(folder / f"{request['key']}.sock", request)
            if outcome in (NO_SERVER, RETIRED):  # one for the stages after this one
                start_server(folder, request["key"], request["options"])
    from tfpipe import outputs

    outputs.run_stage(stage, main)


def delegate(socket_path: Path, request: dict) -> str:
    """Runs the request's stage in a fork of the server at socket_path and exits as it did. Returns only where
    nothing of the stage has run: NO_SERVER (none listens), RETIRED (the server found itself stale and exits), or
    NOT_SERVED (it cannot serve this launcher, or gave no answer within TFPIPE_WARM_TIMEOUT_S)."""
    timeout = float(os.environ.get("TFPIPE_WARM_TIMEOUT_S", HANDSHAKE_SECONDS))
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(socket_path))
        send(sock, request)
        while not select.select([sock], [], [], 0.2)[0]:  # it answers between two of its imports: a few seconds
            if time.monotonic() > deadline or _stopped(socket_path.with_suffix(".lock")):
                raise TimeoutError
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        reply, _ = receive(sock)
        if reply is None or "pid" not in reply:
            sock.close()
            return NO_SERVER if reply is None else RETIRED if reply.get("retire") else NOT_SERVED
        pidfd = os.pidfd_open(reply["pid"])
        send(sock, {"go": True}, [0, 1, 2])  # the stage starts now, with this process's stdio: no timeout from here
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return NO_SERVER
    except TimeoutError:
        sock.close()
        sys.stderr.write(
            f"tfpipe.warm: the warm server is stopped, or gave no answer in {timeout:g} s: the stage runs here\n"
        )
        return NOT_SERVED
    except OSError:
        sock.close()  # the server or its fork went away before the stage started (a stage never started dies)
        return NO_SERVER
    sock.settimeout(None)
    follow(sock, pidfd, request["module"])


def _stopped(lock_path: Path) -> bool:
    """Whether the server holding lock_path (which names its pid) is stopped (kill -STOP, a debugger)."""
    with contextlib.suppress(OSError, ValueError):
        stat = Path(f"/proc/{int(lock_path.read_text())}/stat").read_text()
        return stat[stat.rindex(")") + 2] in "tT"
    return False


def follow(sock: socket.socket, pidfd: int, module: str) -> None:
    """Relays signals to the stage (pidfd), waits for its status from its supervisor (sock), and ends this process
    as the stage ended."""

    def relay(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signum)

    def suspend(_signum, _frame):
        """Ctrl-Z: the stage stops, then this process, as the shell expects; `fg` or `bg` continues both. Both by
        SIGSTOP: a SIGTSTP at its default action is dropped in a process group without a terminal (the stage's
        always, this one's under some runners)."""
        relay(signal.SIGSTOP, None)
        os.kill(os.getpid(), signal.SIGSTOP)

    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGWINCH", "SIGCONT"):
        signal.signal(getattr(signal, name), relay)
    signal.signal(signal.SIGTSTP, suspend)
    status, _ = receive(sock)  # a signal's handler runs and the read goes on (PEP 475)
    sys.stdout.flush()
    if status is None:  # its supervisor was killed: the stage dies with it (PR_SET_PDEATHSIG); wait until it has
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [], 30)
        sys.stderr.write(f"{module}: the warm server's fork that ran it was killed; nothing of it runs now\n")
        os._exit(1)
    if "signal" in status:
        signal.signal(status["signal"], signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [status["signal"]])
        os.kill(os.getpid(), status["signal"])
    os._exit(status.get("exit", 1))


def start_server(folder: Path, key: str, options: list[str]) -> None:
    """Starts tfpipe/warm_server.py's main detached (its own session; output in <key>.log), with this process's
    interpreter options, environment, import path and attributes: it outlives this stage and serves the next."""
    _, facts = warm_facts.server_key(options, warm_facts.import_path())  # the server logs any it does not share
    setup = {"path": warm_facts.import_path(), "facts": warm_facts.digest(facts)}  # short: a variable holds 128 KiB
    environment = {**os.environ, SERVER_SETUP: json.dumps(setup)}
    with contextlib.suppress(OSError):
        log = open(folder / f"{key}.log", "ab")  # noqa: SIM115  handed to the server
        with log:
            subprocess.Popen(
                # From / (it pins no checkout: one server serves them all); the stage adopts its own directory.
                [sys.executable, *options, "-c", SERVER_MAIN.format(folder=str(ROOT / "tfpipe")), key],
                cwd="/",
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )


# ---------------------------------------------------------------------------------------------------- status, stop


def servers(folder: Path) -> list[int]:
    """The pids of this user's live servers in folder, whatever its mode: each holds its key's lock, which names
    its pid, and runs SERVER_MAIN."""
    pids = []
    for lock_path in folder.glob("*.lock"):
        try:
            lock = open(lock_path)  # noqa: SIM115  closed below
        except OSError:
            continue
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
                continue  # nobody holds it: no server
            except OSError:
                pass
            with contextlib.suppress(ValueError, OSError):
                pid = int(lock.read().strip())
                if os.stat(f"/proc/{pid}").st_uid == os.getuid() and SERVER_MARK.encode() in Path(
                    f"/proc/{pid}/cmdline"
                ).read_bytes().replace(b"\0", b" "):
                    pids.append(pid)
    return sorted(pids)


def stop_all() -> int:
    """Stops this user's servers (SIGTERM to each); returns how many."""
    stopped = 0
    for pid in servers(runtime_folder()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            stopped += 1
    return stopped


def main(argv: list[str]) -> None:
    command = argv[0] if argv else "status"
    if command == "stop":
        print(f"stopped {stop_all()} warm server(s)")
    elif command == "status":
        folder = runtime_folder()
        reason = unsafe(folder) if folder.exists() else None
        pids = servers(folder) if folder.exists() else []
        parsed = warm_facts.interpreter_options(sys.orig_argv, "-m")
        key, _ = warm_facts.server_key(parsed[0] if parsed else [], warm_facts.import_path())
        print(
            f"{len(pids)} warm server(s) in {folder}: {pids}; this environment's key {key}"
            f" ({'on' if enabled() else 'off: TFPIPE_WARM=1 turns it on'})"
            + (f"; no stage uses this folder: {reason} (`stop` still stops its servers)" if reason else "")
        )
    else:
        sys.exit("usage: python -m tfpipe.warm [status|stop]")


if __name__ == "__main__":
    main(sys.argv[1:])
