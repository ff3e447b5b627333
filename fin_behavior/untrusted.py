"""What a confined process wrote (a submitted script, its model's verification, a served model), taken in by the
platform as hostile data: never a path followed, never more than a bound, never parsed as anything but data.

- `copy_tree`: a directory tree to a place of the platform's: every component opened relative to its parent's
  descriptor with O_NOFOLLOW (a link swapped in at any moment is refused, not followed), regular files and
  directories only, within a size, file-count and depth bound; refused whole otherwise.
- `write_new`: a file of the platform's put where a confined process writes, created new (never through a link).
- `Output`: a process's output through a pipe, kept within a bound (head and tail), for logs and answers.
- `ask`: an HTTP request to a served model's color, within a wall-clock deadline and a size bound.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import shutil
import socket
import stat
import threading
from pathlib import Path
from typing import IO

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC  # never through a link or over a file
_CHUNK = 1 << 20
MAX_DEPTH = 32


class UntrustedDataError(ValueError):
    """What a confined process left cannot be taken: says what and which bound."""


def copy_tree(root: Path, below: str, destination: Path, max_bytes: int, max_files: int) -> int:
    """Copy the directory `below` (a relative path, as a confined process named it) of `root` (a directory of the
    platform's) to `destination` (made here, must not exist); the number of bytes copied. UntrustedDataError,
    with nothing left at `destination`, when the path leaves `root` or passes a link, or the tree holds anything
    but regular files and directories, or more than `max_bytes` or `max_files`."""
    parts = [p for p in Path(below).parts if p != "."]
    if Path(below).is_absolute() or ".." in parts or len(parts) > MAX_DEPTH:
        raise UntrustedDataError(f"{below[:200]!r} is not a path inside the working directory")
    budget = {"bytes": max_bytes, "files": max_files}
    top = os.open(root, _DIRECTORY)
    try:
        for part in parts:  # each step relative to the one before, never through a link
            try:
                step = os.open(part, _DIRECTORY, dir_fd=top)
            except OSError as exc:
                raise UntrustedDataError(f"{below[:200]!r} cannot be opened without following a link: "
                                         f"{exc.strerror}") from None  # fmt: skip
            os.close(top)
            top = step
        destination.mkdir(mode=0o755)
        try:
            _copy_directory(top, destination, budget, depth=0, where=below)
        except BaseException:
            shutil.rmtree(destination, ignore_errors=True)
            raise
    finally:
        os.close(top)
    return max_bytes - budget["bytes"]


def _copy_directory(directory: int, destination: Path, budget: dict[str, int], depth: int, where: str) -> None:
    if depth > MAX_DEPTH:
        raise UntrustedDataError(f"{where} is nested more than {MAX_DEPTH} directories deep")
    with os.scandir(directory) as entries:
        names = sorted(entry.name for entry in entries)
    for name in names:
        if not name.isprintable():
            raise UntrustedDataError(f"{where} holds a file whose name is not printable text: {name[:60]!r}")
        budget["files"] -= 1
        if budget["files"] < 0:
            raise UntrustedDataError(f"{where} holds more files than the limit allows")
        info = os.stat(name, dir_fd=directory, follow_symlinks=False)
        inside = f"{where}/{name}"
        if stat.S_ISDIR(info.st_mode):
            child = os.open(name, _DIRECTORY, dir_fd=directory)
            try:
                (destination / name).mkdir(mode=0o755)
                _copy_directory(child, destination / name, budget, depth + 1, inside)
            finally:
                os.close(child)
        elif stat.S_ISREG(info.st_mode):
            if info.st_blocks * 512 < info.st_size:  # holes: nothing on its disk, all of it on the platform's
                raise UntrustedDataError(f"{inside} is a sparse file: only files written in full are taken")
            _copy_file(directory, name, destination / name, budget, inside)
        else:
            kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
            raise UntrustedDataError(f"{inside} is {kind}: only regular files and directories are taken")


def _copy_file(directory: int, name: str, target: Path, budget: dict[str, int], where: str) -> None:
    try:
        source = os.open(name, _FILE, dir_fd=directory)
    except OSError as exc:  # ELOOP: it became a link after it was looked at
        raise UntrustedDataError(f"{where} cannot be opened without following a link: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(source).st_mode):
            raise UntrustedDataError(f"{where} is not a regular file")
        out = os.open(target, _NEW_FILE, 0o644)
        try:
            while chunk := os.read(source, _CHUNK):
                budget["bytes"] -= len(chunk)
                if budget["bytes"] < 0:
                    raise UntrustedDataError(f"{where} takes the tree over its size limit")
                os.write(out, chunk)
        finally:
            os.close(out)
    finally:
        os.close(source)


def write_new(path: Path, data: bytes, mode: int = 0o644, owner: os.stat_result | None = None) -> None:
    """`data` as a new file at `path`, in a directory a confined process writes (or will): created there, never
    through a link or over a file already there (FileExistsError, or ELOOP for a link); owned as `owner` says."""
    with os.fdopen(os.open(path, _NEW_FILE, mode), "wb") as out:
        if owner is not None:
            os.fchown(out.fileno(), owner.st_uid, owner.st_gid)
        out.write(data)


def read_small(directory: Path, name: str, limit: int) -> str | None:
    """The text of `directory`/`name` when it is a regular file (opened without following a link) of at most
    `limit` bytes; None otherwise."""
    try:
        parent = os.open(directory, _DIRECTORY)
    except OSError:
        return None
    try:
        fd = os.open(name, _FILE, dir_fd=parent)
    except OSError:
        return None
    finally:
        os.close(parent)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace") if len(data) <= limit else None


class Output:
    """A process's output read from a pipe by a thread, kept within `limit` bytes: the first `limit` bytes go to
    `sink` (a log file) when one is given, and the last `tail_bytes` are always kept, so a flood neither fills the
    disk nor the memory and the end (where errors are) is never lost."""

    def __init__(self, pipe: IO[bytes], limit: int, sink: IO[bytes] | None = None, tail_bytes: int = 1 << 16):
        self.pipe, self.limit, self.sink = pipe, limit, sink
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_size, self.tail_bytes = 0, tail_bytes
        self.written = self.dropped = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := self.pipe.read1(1 << 16):  # type: ignore[attr-defined]
                room = max(0, self.limit - self.written)
                if self.sink is not None and room:
                    self.sink.write(chunk[:room])
                    self.sink.flush()
                self.written += min(room, len(chunk))
                self.dropped += max(0, len(chunk) - room)
                self.tail.append(chunk)
                self.tail_size += len(chunk)
                while self.tail_size - len(self.tail[0]) >= self.tail_bytes:
                    self.tail_size -= len(self.tail.popleft())

    def finish(self, timeout: float = 10.0) -> None:
        """Wait for the end of the output (the process ended); a note of what was left out goes to the sink."""
        self.thread.join(timeout)
        if self.sink is not None and self.dropped:
            self.sink.write(f"\n[{self.dropped:,} bytes of output over the {self.limit:,}-byte limit left out; "
                            "the end follows]\n".encode())  # fmt: skip
            self.sink.write(self.last(self.tail_bytes).encode())
            self.sink.flush()

    def last(self, size: int | None = None) -> str:
        data = b"".join(self.tail)
        return data[-(size or len(data)) :].decode("utf-8", errors="replace")


class SlowAnswerError(UntrustedDataError):
    """The answer did not arrive within its deadline: the service may be hostile, or only busy (a reader that
    waits for readiness asks again until its own deadline)."""


class Answer:
    """An HTTP answer read within bounds (see `ask`)."""

    def __init__(self, status: int, body: bytes):
        self.status, self.body = status, body

    def json(self) -> dict:
        """The body as a JSON object; {} when it is none (a hostile answer is never a crash of the reader)."""
        try:
            found = json.loads(self.body)
        except (ValueError, RecursionError):
            return {}
        return found if isinstance(found, dict) else {}


def ask(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    limit: int = 1 << 20,
    seconds: float = 10.0,
) -> Answer:
    """One HTTP request to a service the platform does not trust (a served model's color): the whole exchange,
    headers included, within `seconds` of wall time (the socket is shut down at the deadline, so an answer that
    drips a byte at a time ends there too), and at most `limit` bytes of body read. OSError when it could not
    be asked; UntrustedDataError when the answer passed a bound."""
    conn = http.client.HTTPConnection(host, port, timeout=seconds)
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        with contextlib.suppress(OSError, AttributeError):
            conn.sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(seconds, cut)
    watchdog.start()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = bytearray()
        while chunk := response.read1(65_536):
            data += chunk
            if len(data) > limit:
                raise UntrustedDataError(f"its answer to {method} {path} passed {limit:,} bytes")
        if expired.is_set():  # the cut ended the body early: not its whole answer
            raise OSError("cut at the deadline")
        return Answer(response.status, bytes(data))
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set() or isinstance(exc, TimeoutError):  # the socket's own timeout can fire before the cut
            raise SlowAnswerError(f"its answer to {method} {path} took longer than {seconds:.3g} s") from None
        raise OSError(f"{method} {path}: {exc}") from None
    finally:
        watchdog.cancel()
        conn.close()
