"""File safety, one way for every file vidup writes (outputs, segment files, the job manifest): a hidden temporary
file beside the target, synced and renamed into place only when complete, so a kill leaves the old file or the new
one, never half of one; temporary files of killed runs recognised and removed; OS errors said in plain words."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
from pathlib import Path

from vidup.errors import JobLockedError, OutputWriteError


def temp_name(path: Path) -> Path:
    """The hidden temporary file for `path`: `.STEM.PID-TOKEN.partSUFFIX` (the suffix kept, so a muxer picked by
    extension still knows the format; the pid, so a later run can tell whether its writer is gone)."""
    return path.parent / f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.part{path.suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Temporary files of earlier runs on `path` whose process is gone (a killed run): removed, and returned so the
    caller can say so."""
    removed = []
    pattern = re.compile(rf"^\.{re.escape(path.stem)}\.(\d+)-[0-9a-f]+\.part{re.escape(path.suffix)}$")
    for candidate in path.parent.glob(f".{path.stem}.*.part{path.suffix}"):
        match = pattern.match(candidate.name)
        if match and not _pid_alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def os_error_text(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC:
        return "the disk is full"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if code == errno.EROFS:
        return "the file system is read-only"
    if code == errno.EIO:
        return "an I/O error"
    return str(exc) or exc.__class__.__name__


def sync_and_close(file) -> None:
    """Flush, fsync and close an open file: its bytes are on the disk before any rename points at them."""
    file.flush()
    os.fsync(file.fileno())
    file.close()


def commit(tmp: Path, path: Path, what: str, usual_mode: bool = False) -> None:
    """Rename the finished `tmp` into place. `usual_mode`: the file gets the mode the umask gives new files
    (temporary files are created 0600). OS errors become an OutputWriteError naming `what`."""
    try:
        if usual_mode:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputWriteError(f"cannot move the finished {what} to {path}: {os_error_text(exc)}") from None


def write_atomically(path: Path, data: bytes, what: str) -> None:
    """`data` into `path` via a temporary file, synced and renamed. OS errors become an OutputWriteError naming
    `what`."""
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputWriteError(f"writing {what} {path} failed: {os_error_text(exc)}") from None


class FileLock:
    """An OS lock (flock) on a hidden file, held while a run works on one output. The OS releases it when the
    holder dies however it dies, so a killed run's lock is simply taken over; the file records the holder's pid for
    the error a second run shows. Released and removed when the run ends."""

    def __init__(self, path: Path, what: str):
        self.path, self.what, self._file = path, what, None

    def __enter__(self) -> "FileLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                file = open(self.path, "a+")
                try:
                    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    file.seek(0)
                    holder = file.read().strip() or "unknown"
                    file.close()
                    raise JobLockedError(
                        f"another vidup (pid {holder}) is working on {self.what}; wait for it to finish or stop it"
                    ) from None
                # a holder that finished removed the file after we opened it: lock the file that is there now
                if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(file.fileno()).st_ino:
                    break
                file.close()
            file.seek(0)
            file.truncate()
            file.write(str(os.getpid()))
            file.flush()
        except OSError as exc:
            raise OutputWriteError(f"cannot lock {self.path}: {os_error_text(exc)}") from None
        self._file = file
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self.path.unlink(missing_ok=True)  # while still holding it: nobody can have locked this file meanwhile
            self._file.close()
            self._file = None
