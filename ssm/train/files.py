"""The files of a run folder, written so that nothing can leave them half-written or
shared: whole-file writes by rename, JSON lines read back with a torn last line
dropped, and one lock per folder so that two trainings never write into one.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import time

from ssm.train.config import ConfigError

LOCK = ".lock"


def write_atomic(path: pathlib.Path, text: str | bytes) -> None:
    """Replace ``path`` with ``text`` (or bytes) all at once: a temporary file beside it,
    fsynced, renamed over it (a kill leaves the old file or the new one, never a part;
    a failed write removes its temporary file)."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only there if the rename did not happen
    _fsync_folder(path.parent)


def _fsync_folder(folder: pathlib.Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform that cannot open folders (Windows): the rename is all we have
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: pathlib.Path) -> list[dict]:
    """The records of a JSON-lines file. A torn last line (a kill or a full disk in the
    middle of an append) is dropped with a note; a bad line anywhere else is an error
    naming the file and the line."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number == len(lines):  # no newline after it: the last append did not finish
                print(f"note: {path}: dropped a torn last line ({len(line)} characters) left by an interrupted write")
                continue
            raise ConfigError(f"{path}, line {number}: not a JSON record ({e.msg}); "
                              f"fix or delete that line to resume") from None
    return records


class RunLock:
    """An exclusive claim on a run folder: an advisory lock (``flock``) on
    ``<folder>/.lock``, which also names its holder (pid, host, start time) for the
    message a second process gets. The kernel releases the lock when its holder exits,
    however it exits (a SIGKILL, a full disk), so a dead run never blocks the folder and
    no two processes can take it over at once; the file itself stays. (On a platform
    without ``fcntl``, an O_EXCL lock file, removed on exit, is the fallback.)"""

    def __init__(self, folder: pathlib.Path):
        self.path = pathlib.Path(folder) / LOCK
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.fd = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover (Windows)
            return self._enter_exclusive_file()
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            self._refuse()
        self.fd = fd
        try:  # who holds it, for a second process's message; the lock does not depend on it
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(self.owner).encode(), 0)
        except OSError:  # a full disk: the lock is held all the same
            pass
        return self

    def _enter_exclusive_file(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            self._refuse()
        with os.fdopen(fd, "w") as f:
            json.dump(self.owner, f)
        return self

    def _refuse(self):
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            holder = {}
        raise ConfigError(
            f"run folder {str(self.path.parent)!r} is in use by process {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')} (since {holder.get('since', '?')}): two trainings in one folder would mix "
            f"their records and checkpoints. Wait for it to finish, or use another --workdir.")

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None
        else:  # the O_EXCL fallback
            self.path.unlink(missing_ok=True)


def remove_leftover_temporaries(folder: pathlib.Path) -> None:
    """Delete what an interrupted :func:`write_atomic` left in ``folder`` (called by
    the process holding the folder's lock, so no write of another is in flight)."""
    for leftover in pathlib.Path(folder).glob(".*.tmp-*"):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
