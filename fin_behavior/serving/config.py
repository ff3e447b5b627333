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


def service_default(name: str) -> Any:
    """The service's own default for one of its settings."""
    return next(f.default for f in dataclasses.fields(ServiceSettings) if f.name == name)


def read_keys(path: Path) -> list[str]:
    """The API keys in `path`; ValueError saying what is wrong (the scoring service's and the /mlops API's)."""
    expected = f'{path} must hold {{"keys": ["...", ...]}} with keys of 16+ characters'
    try:
        keys = json.loads(path.read_text()).get("keys")
    except OSError as exc:
        raise ValueError(f"cannot read the API keys file: {exc}") from None
    except (ValueError, AttributeError):
        raise ValueError(f"{expected}; it is not such a JSON object") from None
    if not keys or not isinstance(keys, list) or not all(isinstance(k, str) and len(k) >= 16 for k in keys):
        raise ValueError(expected)
    return keys
