"""What a stage forked from a warm server (tfpipe/warm.py) shares with the launcher that asked for it, read from the
interpreter and /proc/self: the server's key, the process attributes its fork checks again, what the fork adopts from
the launcher, and why a launcher runs its stage itself. Reads only this process; imports only the standard library.

A fresh `python -m components.<stage>` takes its interpreter options, environment, import path and every attribute
a process inherits (ids, capabilities, limits, priority, CPU and memory placement, cgroup, namespaces, ...) from its
parent, and libraries read some of them while they are imported (OpenBLAS sizes its pool by the CPU affinity, glibc
its thread stacks by RLIMIT_STACK, Keras reads keras.json, TensorFlow its TF_* variables). So they are the server's
key: a launcher that differs in any of them gets a server started by itself, with its own attributes. The fork
adopts what is the launcher's own and cannot have been read at import (working directory, umask, argv, stdio,
signal dispositions and mask) and checks the rest again, in case the server was changed after it started.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import signal
import sys
from pathlib import Path

PROTOCOL = 2
HERE = Path(__file__).resolve().parent
CODE = ("warm.py", "warm_facts.py", "warm_server.py", "warm_stage.py")  # a server runs only launchers of its own code
CHILD_MARK = "TFPIPE_WARM_CHILD"  # set only in a stage forked by the server, for its __main__; removed at once
SERVER_SETUP = "TFPIPE_WARM_SERVER"  # the launcher's import path, for the server it starts; removed at once
# The allow-list: variables whose values no package the server imports uses at import (checked by recording every
# os.environ read while PRELOAD imports: these were only copied with the whole environment, by urllib's proxy
# lookup), set per stage by DVC or per test by pytest; they may differ between a launcher and the server. Every
# other variable, and whether it is set, is part of the key.
ENV_NOT_KEYED = frozenset(
    {
        *("_", "PWD", "OLDPWD", "SHLVL"),  # the shell's bookkeeping
        *("DVC_STAGE", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"),  # DVC's, for each stage it runs
        "MLFLOW_TRACKING_URI",  # read when the store is opened, by the stage
        "TFPIPE_WORKERS",  # read by the project's code, which the server never imports
        "TFPIPE_WARM_TIMEOUT_S",  # read by the launcher only
    }
)
ENV_PRESENCE_KEYED = frozenset({"PYTEST_CURRENT_TEST"})  # mlflow reads whether it is set (no telemetry in tests)
# /proc/self/status: identity, privileges, placement; inherited through fork and exec
STATUS_FIELDS = tuple(
    "Uid Gid Groups CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs Seccomp Seccomp_filters Speculation_Store_Bypass "
    "SpeculationIndirectBranch Cpus_allowed_list Mems_allowed_list THP_enabled".split()
)
PROC_FILES = ("cgroup", "oom_score_adj", "loginuid", "sessionid", "personality", "attr/current", "timerslack_ns")
RLIMITS = tuple(sorted(name for name in dir(resource) if name.startswith("RLIMIT_")))
IOPRIO_GET = {"x86_64": 252, "aarch64": 31, "ppc64le": 274, "s390x": 283}  # the ioprio_get syscall's number
FLAGS = re.compile(r"-[bBdEiIOPqsSuv]+|-[WX].+")  # options without a value (and -W/-X with theirs joined)
WITH_VALUE = ("-W", "-X", "--check-hash-based-pycs")


def interpreter_options(argv: list[str], until: str) -> tuple[list[str], int] | None:
    """The interpreter's options in argv (sys.orig_argv) before `until` ("-m" for a launcher, "-c" for a server) and
    the index of `until`, or None where argv holds anything else."""
    options, index = [], 1
    while index < len(argv):
        token = argv[index]
        if token == until:
            return options, index
        if token in WITH_VALUE and index + 1 < len(argv):
            options += argv[index : index + 2]
            index += 2
        elif FLAGS.fullmatch(token):
            options.append(token)
            index += 1
        else:
            return None
    return None


def import_path() -> list[str]:
    """sys.path without its first entry, the script's (here the working) directory, which the stage adopts."""
    return list(sys.path if sys.flags.safe_path else sys.path[1:])


def keyed_environment(environment) -> dict:
    ignored = ENV_NOT_KEYED | {CHILD_MARK, SERVER_SETUP}
    return {
        name: None if name in ENV_PRESENCE_KEYED else value
        for name, value in sorted(environment.items())
        if name not in ignored
    }


def server_key(options: list[str], path: list[str]) -> tuple[str, dict]:
    """The key of the server that may run this launcher's stage, and the facts it hashes."""
    facts = {
        "protocol": PROTOCOL,
        "python": [os.path.realpath(sys.executable), sys.version],
        "options": options,
        "flags": list(sys.flags),
        "warnoptions": sys.warnoptions,
        "xoptions": sys._xoptions,
        "path": path,
        "packages": {entry: _mtime(entry) for entry in path if entry.endswith(("site-packages", "dist-packages"))},
        "code": [hashlib.sha256((HERE / name).read_bytes()).hexdigest() for name in CODE],
        "env": keyed_environment(os.environ),
        "process": process_facts(),
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20], facts


def launch_request(stage: str) -> dict | None:
    """What a server needs to run this process's stage, or None where no fork could (cold_reason; not
    started as `python [options] -m components.<stage>`)."""
    parsed = interpreter_options(sys.orig_argv, "-m")
    module = f"components.{stage}"
    if parsed is None or sys.orig_argv[parsed[1] + 1 : parsed[1] + 2] != [module] or cold_reason():
        return None
    options = parsed[0]
    key, facts = server_key(options, import_path())
    return {
        "key": key,
        "module": module,
        "options": options,
        "process": facts["process"],
        "adopt": adopted_facts(),
        "cwd": os.getcwd(),
        "path0": None if sys.flags.safe_path else sys.path[0],
        "env": dict(os.environ),
        "argv": sys.argv,
        "orig_argv": sys.orig_argv,
    }


def process_facts() -> dict:
    """This process's inherited attributes: what the fork checks again before it runs a stage."""
    status = read_status()
    facts = {name: status.get(name) for name in STATUS_FIELDS}
    facts |= {name: _read(f"/proc/self/{name}") for name in PROC_FILES}
    with os.scandir("/proc/self/ns") as entries:
        facts["namespaces"] = {entry.name: _readlink(entry.path) for entry in sorted(entries, key=lambda e: e.name)}
    root = os.stat("/")
    facts["root"] = [root.st_dev, root.st_ino]
    facts["rlimits"] = {name: list(resource.getrlimit(getattr(resource, name))) for name in RLIMITS}
    facts["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    facts["scheduler"] = [os.sched_getscheduler(0), os.sched_getparam(0).sched_priority]
    facts["ioprio"] = _ioprio()
    return facts


def adopted_facts() -> dict:
    """What the fork takes over from the launcher as it is: umask, ignored and blocked signals."""
    status = read_status()
    return {
        "umask": int(status["Umask"], 8),
        "ignored": signal_numbers(status["SigIgn"]),
        "blocked": signal_numbers(status["SigBlk"]),
    }


def cold_reason() -> str | None:
    """Why this launcher's stage cannot run in any fork of a server, or None."""
    for name in ("RLIMIT_AS", "RLIMIT_DATA"):
        if resource.getrlimit(getattr(resource, name))[0] != resource.RLIM_INFINITY:
            return f"{name} is set: every package the server imported would count against it"
    timers = (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)
    if any(signal.getitimer(timer)[0] for timer in timers):
        return "a timer (alarm, setitimer) is pending: it belongs to this process"
    inherited = [number for number in map(int, os.listdir("/proc/self/fd")) if number > 2 and _is_open(number)]
    if inherited:
        return f"file descriptors {inherited} are open beside stdin, stdout and stderr: a fork would not have them"
    return None


def digest(facts: dict) -> dict:
    """server_key's facts, each value a short hash (the environment's one by one): what a server logs the names of
    when it does not share a launcher's key."""
    short = {name: hashlib.sha256(json.dumps(value).encode()).hexdigest()[:12] for name, value in facts.items()}
    return short | {part: digest(facts[part]) for part in ("process", "env") if isinstance(facts.get(part), dict)}


def differences(wanted: dict, found: dict) -> list[str]:
    """The names of the facts whose values differ."""
    return sorted(name for name in wanted.keys() | found.keys() if wanted.get(name) != found.get(name))


def read_status() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return fields


def signal_numbers(mask: str) -> list[int]:
    bits = int(mask, 16)
    return [number for number in range(1, 65) if bits >> (number - 1) & 1]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _is_open(number: int) -> bool:
    try:
        os.fstat(number)
    except OSError:
        return False  # the descriptor os.listdir used for /proc/self/fd, closed since
    return True


def _ioprio() -> int | None:
    number = IOPRIO_GET.get(os.uname().machine)
    if number is None:
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).syscall(number, 1, 0)  # IOPRIO_WHO_PROCESS, this process


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0
