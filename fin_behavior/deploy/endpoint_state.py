"""The local endpoint's state file (`<endpoint>/endpoint.json`): written only by its supervisor
(fin_behavior/deploy/supervisor.py, `Supervisor._save`), read through `read_state` by the local target, the
`fin-behavior endpoint` commands and a supervisor starting again after a restart.

Typed so that every key has one spelling, checked by mypy where it is written and where it is read. A file of an
earlier version reads with the missing lists empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypedDict, cast, get_args

from fin_behavior.records import read_json

STATE_FILE = "endpoint.json"

Status = Literal[
    "starting",
    "ready",
    "failed",
    "live",
    "idle",
    "challenger",  # gets a shadow's copies or a split's share of the live color's requests (serving/traffic.py)
    "retiring",
    "restarting",
    "crash-loop",
    "exited",
    "stopped",
]


class ColorBounds(TypedDict, total=False):
    """A confined color's kernel bounds and writable directory (submitted models; see LocalTarget._confined)."""

    group: str
    memory_bytes: int
    processes: int
    cpus: float
    writable: str
    disk_bytes: int
    uid: int


class ColorEntry(TypedDict, total=False):
    """One color: what the deploying side asked for (the start command's spec), then what the supervisor adds."""

    # the spec, from the deploying side
    color: str
    version: str
    model: str  # the registered model's name (the history names it)
    control: str  # the color's control socket, bound by the supervisor
    log: str
    bundle: str
    argv: list[str]
    bounds: ColorBounds
    # added by the supervisor
    port: int  # the color's private port, bound by the supervisor and kept across restarts
    pid: int
    identity: str | None  # boot id and start time of `pid` (process_identity): a recycled pid is not the color
    status: Status
    started_at: float
    restarts: list[float]  # times of the restarts within the crash-loop window
    # the status view only (LocalTarget.status), never written
    running: bool


class Replaced(TypedDict):
    version: str
    color: str
    replaced_at: float


class Event(TypedDict):
    time: float
    color: str | None
    message: str


class SupervisorStamp(TypedDict):
    pid: int
    updated_at: float


class Challenger(TypedDict):
    """The experiment running beside the live color: which color, its version, how it gets traffic."""

    color: str
    version: str
    mode: str  # "shadow" or "split" (serving/traffic.py MODES)
    share: float
    timeout: float  # how long the live color waits for it (a split's answer, a shadow's copy)
    since: float


class EndpointState(TypedDict, total=False):
    url: str
    live: str | None  # the color that holds the public socket
    colors: dict[str, ColorEntry]
    history: list[Replaced]  # the last 20 versions replaced, oldest first
    events: list[Event]  # the supervisor's last events (restarts, crash loops, sockets), oldest first
    challenger: Challenger | None
    supervisor: SupervisorStamp
    # the status view only (LocalTarget.status), never written
    supervisor_running: bool
    answering: str | None


def status(word: str) -> Status:
    """A status named in a supervisor command, or ValueError (the command is answered with the error)."""
    if word not in get_args(Status):
        raise ValueError(f"unknown color status {word!r}: one of {', '.join(get_args(Status))}")
    return cast(Status, word)


def read_state(root: Path, url: str) -> EndpointState:
    """The endpoint's state as last written, with every list present; a fresh one when there is none."""
    path = root / STATE_FILE
    found: dict[str, Any] = read_json(path) if path.exists() else {}
    return cast(
        EndpointState, {"url": url, "live": None, "colors": {}, "history": [], "events": [], "challenger": None} | found
    )
