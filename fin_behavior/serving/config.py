"""What the scoring service is told, with its own defaults written here once: the service's command line and
the platform's settings (fin_behavior/settings.py) both take theirs from this dataclass. Standard library only."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ServiceSettings:
    bundle_dir: Path
    keys_file: Path
    model_version: str
    model_name: str = "model"  # the name Open Inference Protocol clients call it by (/v2/models/{name})
    bundle_digest: str | None = None  # the registry's digest of model_info.json: any other manifest is refused
    host: str = "127.0.0.1"
    port: int = 8080
    private_fd: int | None = None  # a listening socket inherited from the endpoint's supervisor, instead of port
    max_rows: int = 1_000
    max_body_bytes: int = 1 << 20
    max_queued: int = 128  # complete requests waiting for an answer (protocol.py)
    max_pending_bodies: int = 256  # requests whose body is still arriving
    body_timeout_seconds: float = 10.0
    max_url_bytes: int = 8 * 1024
    max_head_bytes: int = 64 * 1024  # request line and headers together
    prediction_log: Path | None = None  # one JSON line per scored request (prediction_log.py); "-": stdout
    log_sample_rate: float = 1.0  # share of scored requests logged with their inputs and outputs
    log_max_bytes: int = 64 << 20  # the log is rotated at this size...
    log_keep_files: int = 8  # ...and at most this many rotated files are kept
    drain_seconds: float = 10.0  # how long a released color answers its open connections (see handoff.py)
    control_fd: int | None = None  # a listening Unix socket for blue/green commands, bound by the supervisor
    predict_timeout_seconds: float | None = None  # a pyfunc (submitted) model's predict past this: 504
    explain_workers: int = 1  # processes computing explanations (explain.py), started on the first; 0: off
    explain_max_pending: int = 4  # explanations accepted at once (running or waiting); past it 429
    explain_max_rows: int = 200  # rows one POST /explain may ask for
    explain_timeout_seconds: float = 30.0  # an explanation not done by then: 504


def service_default(name: str) -> Any:
    """The service's own default for one of its settings."""
    return next(f.default for f in dataclasses.fields(ServiceSettings) if f.name == name)


def read_keys(path: Path, field: str = "keys") -> list[str]:
    """The API keys in `path`; ValueError saying what is wrong (the scoring service's and the /mlops API's).
    `field="probe_keys"`: the platform's probe keys (see `read_probe_keys`)."""
    return read_key_lists(path, field)[field]


def read_key_lists(path: Path, required: str, optional: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """The lists of keys `path` holds, the file read once: `required`'s, and each of `optional`'s ([] when the file
    has none, or an empty one); ValueError saying what is wrong with the file or a list."""
    try:
        held = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read the API keys file: {exc}") from None
    except (ValueError, RecursionError):
        held = None

    def expected(field: str) -> str:
        return f'{path} must hold {{"{field}": ["...", ...]}} with keys of 16+ characters'

    if not isinstance(held, dict):
        raise ValueError(f"{expected(required)}; it is not such a JSON object")
    lists: dict[str, list[str]] = {}
    for field in (required, *optional):
        keys = held.get(field)
        if field != required and (field not in held or keys == []):
            lists[field] = []
            continue
        if not keys or not isinstance(keys, list) or not all(isinstance(k, str) and len(k) >= 16 for k in keys):
            raise ValueError(expected(field))
        # a key of spaces would match the spaces a header ends with, which an HTTP parser (httptools) may keep
        if not all(k.isprintable() and not any(c.isspace() for c in k) for k in keys):
            raise ValueError(f"{expected(field)}, without spaces or control characters")
        lists[field] = keys
    return lists


def read_probe_keys(path: Path) -> list[str]:
    """The platform's own keys in the same file (`"probe_keys"`, optional): a request authenticated with one is the
    platform probing its endpoint (rollout gates, endpoint checks, benchmarks), logged as a probe and kept out of
    the monitored traffic.

    Why a key and not a header: the mark must be something only the platform can produce, or any client could
    hide its traffic from monitoring by copying it. The platform already holds a secret the clients do not, the
    keys file it writes (mode 0600, or the cluster's Secret), and the service already compares the offered key
    with every key in constant time. A second kind of key adds no new secret, no clock and no new header: a
    client cannot mark a request without the probe key, and a request carrying any other sign of being a probe
    (a header, a field) is ordinary traffic. Each endpoint has its own probe key, never handed to its clients
    (they are given `"keys"`); a confined submitted model that can read its own endpoint's keys file can also
    write that endpoint's log, so the key gives it nothing more."""
    return read_key_lists(path, "keys", ("probe_keys",))["probe_keys"]
