"""A warm server's fork made into its launcher's stage (tfpipe/warm.py, tfpipe/warm_server.py), or refused.

What the server's imports depended on is recorded while it imports (every file opened, every top-level name looked
up, the settings a package looks up relative to the working directory); the fork takes the launcher's stdio,
directory, allow-listed variables, umask, signal dispositions and mask, argv and script directory, drops the warm
code's modules and the server's __main__, resets what caches the process's own state (temporary folder, time zone,
numpy's global random state), and then checks: its process attributes are still the launcher's, no recorded file
changed, the stage's directory shadows no module the server imported, each lookup gives the server's answer. Any
failure is a refusal, sent before anything of the stage has run: the launcher runs the stage itself.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import importlib
import importlib.machinery
import json
import os
import signal
import socket
import sys
import time
import types

from tfpipe import warm, warm_facts

SKIPPED = ("/proc/", "/dev/", "/sys/")  # kernel files: their times are not contents


def _keras_json(_module) -> str:
    """Where Keras (tf_keras and keras 3 alike) reads keras.json at import, and whether it is there."""
    home = os.path.expanduser("~")
    folder = os.environ.get("KERAS_HOME") or os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    path = os.path.join(folder, "keras.json")
    return f"{path} ({'present' if os.path.isfile(path) else 'absent'})"


# Settings a preloaded package looks up at import in files that may not exist yet, or relative to the working
# directory (nothing opened, nothing recorded): the stage's answer must be the server's.
IMPORT_LOOKUPS = {"matplotlib": lambda module: module.matplotlib_fname(), "tf_keras": _keras_json}
PR_SET_PDEATHSIG = 1

_recording = False
_opened: list = []  # paths opened while recording
_names: set[str] = set()  # top-level module names looked up while recording, found or not
_files: dict[str, tuple[int, int, int]] = {}  # path as opened -> (mtime_ns, size, inode) after the import
_lookups: dict[str, str] = {}  # IMPORT_LOOKUPS' answers in the server


class _NameRecorder:
    """First on sys.meta_path while the server imports: records each top-level name asked for, finds nothing."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if _recording and path is None:
            _names.add(name)


def _audit(event: str, args: tuple) -> None:
    # Audit hooks cannot be removed: this one does nothing but while the server imports PRELOAD.
    if _recording and event == "open":
        _opened.append(args[0])


def record_imports() -> None:
    sys.addaudithook(_audit)
    sys.meta_path.insert(0, _NameRecorder)


def preload(name: str) -> None:
    """Imports `name` in the server, recording the files it read and the names it looked up."""
    global _recording
    _recording = True
    try:
        importlib.import_module(name)
    except Exception as error:  # noqa: BLE001  a stage that needs it imports it (and fails) itself
        log(f"could not preload {name}: {error!r}")
    finally:
        _recording = False
    paths = [*_opened, *(getattr(module, "__file__", None) for module in list(sys.modules.values()))]
    _opened.clear()
    skipped = (*SKIPPED, str(warm.ROOT) + os.sep)  # the warm code itself is hashed in the key
    for path in paths:
        if isinstance(path, str | bytes | os.PathLike) and (path := os.fsdecode(path)) not in _files:
            if not path.startswith(skipped):
                with contextlib.suppress(OSError):
                    status = os.stat(path)
                    _files[path] = (status.st_mtime_ns, status.st_size, status.st_ino)
    for module, lookup in IMPORT_LOOKUPS.items():
        if module in sys.modules and module not in _lookups:
            _lookups[module] = lookup(sys.modules[module])


def become_stage(request: dict, supervisor: int, ready: int, go: socket.socket) -> dict:
    """In the stage's fork: becomes the launcher's process, reports on `ready` (nothing, or why not), and returns the
    request once the supervisor's go brings the launcher's stdin, stdout and stderr; exits at once where it will not
    run or the go never comes."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with its supervisor
        refusal = {"cold": "the supervisor is gone"} if os.getppid() != supervisor else _become(request)
    except BaseException as error:  # noqa: BLE001  never back into the server's loop
        refusal = {"cold": f"the fork could not become the stage: {error!r}", "retire": True}
    os.write(ready, json.dumps(refusal or {}).encode())
    os.close(ready)
    if refusal:
        os._exit(0)
    message, fds, _, _ = socket.recv_fds(go, 1, 3)
    go.close()
    if message != b"g" or len(fds) != 3:
        os._exit(0)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    buffered = not sys.stdout.write_through  # as Python sets stdio up: line-buffered on a terminal, stderr always
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=buffered and (stream is sys.stderr or stream.isatty()))
    return request


def _become(request: dict) -> dict | None:
    os.chdir(request["cwd"])
    changed = warm_facts.differences(request["process"], warm_facts.process_facts())
    if changed:
        return {"cold": f"the server's {', '.join(changed)} changed since it started", "retire": True}
    for name in warm_facts.ENV_NOT_KEYED | warm_facts.ENV_PRESENCE_KEYED:
        if name in request["env"]:
            os.environ[name] = request["env"][name]
        else:
            os.environ.pop(name, None)
    os.environ[warm_facts.CHILD_MARK] = "1"  # the stage's warm.run_stage removes it
    os.umask(request["adopt"]["umask"])
    _adopt_signals(set(request["adopt"]["ignored"]), request["adopt"]["blocked"])
    sys.argv[:] = request["argv"]
    sys.orig_argv[:] = request["orig_argv"]
    if request["path0"] is not None:
        sys.path.insert(0, request["path0"])
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_NameRecorder)
    _reset_process_state()
    return _stale(request)


def _adopt_signals(ignored: set[int], blocked: list[int]) -> None:
    """The launcher's ignored signals (inherited at exec: nohup, a shell's background job) and blocked mask; what a
    preloaded package installed is kept, as its import in the stage would have."""
    status = warm_facts.read_status()
    now_ignored = set(warm_facts.signal_numbers(status["SigIgn"]))
    caught = set(warm_facts.signal_numbers(status["SigCgt"]))
    for number in set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}:
        if number == signal.SIGINT:  # Python's own handler unless it was ignored at start
            signal.signal(number, signal.SIG_IGN if number in ignored else signal.default_int_handler)
        elif number in ignored and number not in now_ignored | caught:
            signal.signal(number, signal.SIG_IGN)
        elif number not in ignored and number in now_ignored:
            signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _reset_process_state() -> None:
    """What the server computed and cached for itself: recomputed as the stage's own process would."""
    if "tempfile" in sys.modules:
        sys.modules["tempfile"].tempdir = None  # gettempdir() again, from the stage's TMPDIR and directory
    time.tzset()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # a fresh process's unseeded global state, not the one of every fork
    importlib.invalidate_caches()
    server_root = str(warm.ROOT) + os.sep
    for name, module in list(sys.modules.items()):  # the warm code: the stage imports its checkout's own
        if (
            name == "tfpipe"
            or name.startswith("tfpipe.")
            or (getattr(module, "__file__", "") or "").startswith(server_root)
        ):
            del sys.modules[name]
    main = types.ModuleType("__main__")  # as the interpreter makes it before `-m` runs a module in it
    main.__annotations__, main.__builtins__ = {}, builtins
    sys.modules["__main__"] = main


def _stale(request: dict) -> dict | None:
    for path, before in _files.items():
        try:
            status = os.stat(path)  # a relative path: from the stage's directory, as its import would read it
            now = (status.st_mtime_ns, status.st_size, status.st_ino)
        except OSError:
            now = None
        if now != before:
            return {
                "cold": f"{path}, read by the server's imports, differs for this stage",
                "retire": os.path.isabs(path),
            }
    if request["path0"] is not None:
        shadowing = _shadowing(request["path0"])
        if shadowing:
            return {"cold": f"{shadowing} in the stage's directory shadows a module the server imported from elsewhere"}
    for module, answer in _lookups.items():
        now = IMPORT_LOOKUPS[module](sys.modules[module])
        if now != answer:
            return {
                "cold": f"{module} finds {now} for this stage, not {answer}",
                "retire": not os.path.abspath(now).startswith(os.getcwd() + os.sep),
            }
    return None


def _shadowing(folder: str) -> str | None:
    """An entry of folder (the stage's first import path entry) importable by a name the server's imports looked
    up: a cold stage would have imported it instead."""
    suffixes = importlib.machinery.all_suffixes()
    try:
        entries = os.listdir(folder)
    except OSError:
        return None
    for entry in entries:
        suffix = next((suffix for suffix in suffixes if entry.endswith(suffix)), None)
        name = entry[: -len(suffix)] if suffix else entry
        if name in _names and (suffix or os.path.isdir(os.path.join(folder, entry))):
            return entry
    return None


def run_as_main(module: str) -> None:
    """Runs module as `python -m` does (runpy's _run_module_as_main: the same __main__, argv[0] and frames); an
    uncaught exception is printed from the same frame as a fresh process prints it, without the warm server's."""
    import runpy

    try:
        runpy._run_module_as_main(module)
    except SystemExit:
        raise
    except BaseException as error:
        trace = error.__traceback__
        while trace is not None and trace.tb_frame.f_code is not runpy._run_module_as_main.__code__:
            trace = trace.tb_next
        hook = sys.excepthook  # the stage's own (tfpipe.redaction's), called with the trimmed traceback

        def excepthook(kind, value, traceback, trimmed=trace, raised=error):
            hook(kind, value, trimmed if value is raised and trimmed is not None else traceback)

        sys.excepthook = excepthook
        raise


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} tfpipe.warm[{os.getpid()}]: {message}", flush=True)
