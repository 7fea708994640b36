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


def write_atomic(path: pathlib.Path, text: str) -> None:
    """Replace ``path`` with ``text`` all at once: a temporary file beside it, fsynced,
    renamed over it (a kill leaves the old file or the new one, never a part)."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
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
    """An exclusive claim on a run folder: ``<folder>/.lock`` holding the owner's pid,
    host and start time, made with O_EXCL. A second process is refused with a clear
    error; a lock left by a process of this host that no longer runs is taken over with
    a note. Used as a context manager; the lock goes when the run ends, however it ends."""

    def __init__(self, folder: pathlib.Path):
        self.path = pathlib.Path(folder) / LOCK
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}

    def __enter__(self) -> RunLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_or_refuse()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            return self
        raise ConfigError(f"run folder {str(self.path.parent)!r}: could not take its lock {str(self.path)!r}")

    def _take_over_or_refuse(self) -> None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            holder = {}
        pid, host = holder.get("pid"), holder.get("host")
        if host == self.owner["host"] and isinstance(pid, int) and not _running(pid):
            print(f"note: {self.path.parent}: taking over the lock of process {pid}, which no longer runs")
            self.path.unlink(missing_ok=True)
            return
        raise ConfigError(
            f"run folder {str(self.path.parent)!r} is in use by process {pid} on {host} (since "
            f"{holder.get('since', '?')}): two trainings in one folder would mix their records and checkpoints. "
            f"Wait for it to finish, use another --workdir, or delete {str(self.path)!r} if that process is gone.")

    def __exit__(self, *exc) -> None:
        try:
            if json.loads(self.path.read_text()).get("pid") == self.owner["pid"]:
                self.path.unlink()
        except (OSError, json.JSONDecodeError):
            pass


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
