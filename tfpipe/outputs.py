"""Writes stage outputs whole or not at all: unique temporary names, renamed into place.

A reader (the next stage, DVC, a model server) sees the previous output or the new one, never a
half-written file or a moment with no directory; a failed stage leaves the previous output as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

TEMPORARY_MARK = ".tmp-"  # staging names are .<name>.tmp-<random> (git-ignored)


def exchange(first: Path, second: Path) -> bool:
    """Swaps two existing paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the filesystem cannot exchange
        return False
    raise OSError(ctypes.get_errno(), f"cannot exchange {first} and {second}: {os.strerror(ctypes.get_errno())}")


def replace_directory(staging: Path, target: Path) -> None:
    """Puts the complete directory `staging` at `target`; the previous `target` is deleted afterwards.

    Where the kernel can exchange two paths atomically, `target` always names a whole directory;
    elsewhere the previous directory is first renamed aside, so the gap is two renames long.
    """
    staging, target = Path(staging), Path(target)
    if not target.exists() and not target.is_symlink():
        os.replace(staging, target)
        return
    if exchange(staging, target):
        shutil.rmtree(staging)  # now holds the previous output
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}{TEMPORARY_MARK}old-", dir=target.parent))
    os.replace(target, trash / target.name)
    os.replace(staging, target)
    shutil.rmtree(trash)


def sweep_staging(path: Path) -> list[Path]:
    """Removes the staging folders of `path` (`.<name>.tmp-<pid>-*`) whose process no longer runs: what a killed
    stage left. A live process's staging folder (another stage writing now) is left alone."""
    import psutil

    removed = []
    for folder in path.parent.glob(f".{path.name}{TEMPORARY_MARK}*"):
        owner = folder.name.removeprefix(f".{path.name}{TEMPORARY_MARK}").split("-", 1)[0]
        if folder.is_dir() and (not owner.isdigit() or not psutil.pid_exists(int(owner))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


STAGE_RESTORE_HINT = (
    "DVC removed this stage's previous outputs before running it: `dvc checkout {stage}` restores them from the DVC "
    "cache, and the next `dvc repro` that succeeds writes new ones"
)
# A stage whose outputs dvc.yaml marks persist (tfpipe/paths.KEEP_OUTPUTS): DVC leaves them in place.
STAGE_KEPT_HINT = (
    "its previous outputs are as they were (DVC keeps them while it runs: persist in dvc.yaml), and the next "
    "`dvc repro` that succeeds replaces them"
)


class StatedError(Exception):
    """An error whose message says what is wrong and what to do (a param, a missing file of the user's): a stage
    prints the message, not a traceback. ParamsError is one; so are the missing backbone weights."""


def run_stage(stage: str, main, exit_when_done: bool = True) -> None:
    """Runs a stage's main; on failure (Ctrl-C included) says what happened to its outputs. A StatedError (exit 1)
    and Ctrl-C (killed by SIGINT, as Python's own exit on it: a shell or DVC stops there) end it with a sentence;
    anything else is re-raised, its traceback shown. After a main that returned, exits at once (exit_now)."""
    from tfpipe.paths import KEEP_OUTPUTS

    hint = f"{stage}: {(STAGE_KEPT_HINT if stage in KEEP_OUTPUTS else STAGE_RESTORE_HINT).format(stage=stage)}"
    try:
        main()
    except SystemExit as error:
        if error.code not in (0, None):
            print(hint, file=sys.stderr)
        raise
    except StatedError as error:
        print(f"{stage}: {error}\n{hint}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"{stage}: interrupted (Ctrl-C); nothing of this run was kept\n{hint}", file=sys.stderr)
        exit_by_sigint()
    except BaseException:
        print(hint, file=sys.stderr)
        raise
    if exit_when_done:
        exit_now()


def exit_by_sigint() -> None:
    """What Python does after an uncaught KeyboardInterrupt, without its traceback: the exit handlers, then death by
    SIGINT, so the parent sees the signal (not a code)."""
    import atexit
    import signal
    import threading

    sys.stdout.flush()
    sys.stderr.flush()
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    raise SystemExit(130)  # not reached where SIGINT kills


def exit_now() -> None:
    """Ends a stage's process that has finished: every output is written, renamed into place and closed, its MLflow
    run ended and its queued logging done, its TensorBoard writers flushed. The exit handlers still run (logging's,
    joblib's worker pool's, multiprocessing's: no process of ours is left behind); what is skipped, as os._exit
    does, is the interpreter's teardown (every imported module's finalizers, TensorFlow's above all), which writes
    nothing of ours and took 1-3 s a stage here (benchmarks/run.py's profile)."""
    import atexit
    import threading

    sys.stdout.flush()
    sys.stderr.flush()
    # What the interpreter's exit does first, in its order: threading's exit hooks (joblib's loky pool stops its
    # workers there; skipped, they would outlive the stage for their 300 s idle timeout, holding its output pipe),
    # joining the other threads, then the atexit handlers. Only the teardown after them is skipped.
    threading._shutdown()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@contextlib.contextmanager
def atomic_directory(path: Path | str, replace_on: tuple[type[BaseException], ...] = ()):
    """Yields a temporary sibling directory that replaces `path` only if the block succeeds (or raises
    one of `replace_on`: a report that is complete also when it reports a failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_staging(path)
    # The owner's PID in the name: a later run removes the staging folders of processes that are gone (SIGKILL).
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMPORARY_MARK}{os.getpid()}-", dir=path.parent))
    staging.chmod(0o755)  # mkdtemp makes it owner-only; a model server often runs as another user
    try:
        yield staging
    except replace_on:
        replace_directory(staging, path)
        raise
    else:
        replace_directory(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_bytes(path: Path | str, content: bytes) -> None:
    """Writes a file under a unique temporary name, then renames it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staging = tempfile.mkstemp(prefix=f".{path.name}{TEMPORARY_MARK}", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def write_text(path: Path | str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path | str, data) -> None:
    """JSON (sorted keys, indented) written atomically: readers never see a partial file."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: Path | str, frame) -> None:
    """A pandas DataFrame as CSV (no index), written atomically."""
    write_text(path, frame.to_csv(index=False))


def file_sha256(path: Path | str) -> str:
    with Path(path).open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()
