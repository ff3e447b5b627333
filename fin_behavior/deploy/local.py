"""The local deployment target: each color is a scoring-service process in the model's serving environment,
detached so it outlives the Dagster run; the stable URL is one listening socket handed between them (see
handoff.py). What runs where is persisted in `<endpoint dir>/endpoint.json`, so `fin-behavior endpoint ...`
and later Dagster runs find it."""

from __future__ import annotations

import collections
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from fin_behavior.deploy.rollout import Release, RolloutError, Slot
from fin_behavior.environments.builder import built_path
from fin_behavior.records import read_json, write_json
from fin_behavior.serving.handoff import send_command

STATE_FILE, KEYS_FILE = "endpoint.json", "keys.json"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def process_alive(pid: int | None) -> bool:
    """Running and still our scoring service (not a zombie, not a recycled pid)."""
    if not pid:
        return False
    try:
        return b"fin_behavior.serving.app" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def ensure_keys(path: Path) -> str:
    """The endpoint's API key, generated at first deploy, readable by the owner only. Never logged."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": [secrets.token_urlsafe(32)]}, f)
    return read_json(path)["keys"][0]


class LocalTarget:
    name = "local"
    splits_traffic = False  # one listening socket moves whole: no canary shares

    def __init__(
        self,
        root: Path,
        envs_dir: Path,
        host: str = "127.0.0.1",
        port: int = 8080,
        start_timeout: float = 60.0,
        drain_seconds: float = 10.0,
    ):
        self.root, self.envs_dir, self.host, self.port = root, envs_dir, host, port
        self.start_timeout, self.drain_seconds = start_timeout, drain_seconds
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._clients: dict[str, httpx.Client] = {}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def keys_file(self) -> Path:
        return self.root / KEYS_FILE

    def key(self) -> str:
        return ensure_keys(self.keys_file)

    # Persisted state -------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        path = self.root / STATE_FILE
        state = read_json(path) if path.exists() else {}
        return {"url": self.url, "live": None, "colors": {}, "history": []} | state

    def _update(self, **changes: Any) -> None:
        write_json(self.root / STATE_FILE, self.state() | changes)

    def _set_color(self, color: str, **fields: Any) -> None:
        state = self.state()
        state["colors"][color] = state["colors"].get(color, {}) | fields
        write_json(self.root / STATE_FILE, state)

    def slot(self, color: str) -> Slot:
        entry = self.state()["colors"][color]
        return Slot(color, entry["version"], entry)

    def live(self) -> Slot | None:
        state = self.state()
        color = state["live"]
        if color is None or not process_alive(state["colors"].get(color, {}).get("pid")):
            return None
        return self.slot(color)

    # Target steps ------------------------------------------------------------------------------------------

    def _python(self, release: Release) -> Path:
        name, fingerprint = release.info.serving_environment, release.info.environment_fingerprint
        python = built_path(self.envs_dir, name, fingerprint) / "bin" / "python"
        if not python.exists():
            raise RolloutError(
                f"serving environment {name!r} ({fingerprint}) that v{release.version} was verified in is not built "
                f"under {self.envs_dir}; rebuild it with `dagster job execute -m fin_behavior.definitions "
                "-j rebuild_compatible` (or deploy a version built for an environment that exists)"
            )
        return python

    def start(self, release: Release, color: str) -> Slot:
        previous = self.state()["colors"].get(color, {})
        if process_alive(previous.get("pid")):  # an old color kept idle occupies the slot
            self.stop(self.slot(color))
        python = self._python(release)
        port = free_port(self.host)
        control = self.root / f"{color}.sock"
        log = self.root / "logs" / f"{color}.log"
        log.parent.mkdir(exist_ok=True)
        command = [
            str(python), "-m", "fin_behavior.serving.app",
            "--bundle", str(release.bundle),
            "--bundle-digest", release.info.digest,
            "--keys-file", str(self.keys_file),
            "--model-version", release.version,
            "--host", self.host,
            "--port", str(port),
            "--control", str(control),
            "--drain-seconds", str(self.drain_seconds),
            "--prediction-log", str(self.root / "predictions.jsonl"),
        ]  # fmt: skip
        self.key()
        with log.open("a") as out:
            out.write(f"\n=== {datetime.now(UTC).isoformat(timespec='seconds')} v{release.version} on {color} ===\n")
            out.flush()
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._set_color(
            color,
            version=release.version,
            pid=process.pid,
            port=port,
            control=str(control),
            log=str(log),
            bundle=str(release.bundle),
            status="starting",
            started_at=time.time(),
        )
        slot = self.slot(color)
        reason = self._wait_ready(slot, process)
        if reason is not None:
            tail = self.logs(slot, 40)
            self.discard(slot)
            raise RolloutError(f"v{release.version} did not become ready on {color}: {reason}", tail)
        self._set_color(color, status="ready")
        return self.slot(color)

    def _wait_ready(self, slot: Slot, process: subprocess.Popen) -> str | None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return f"the process exited with code {process.returncode}"
            try:
                response = self.client(slot).get("/ready", timeout=2)
                if response.status_code == 200:
                    return None
                return f"the service is up but not ready: {response.json().get('reason')}"  # bundle refused
            except httpx.TransportError:
                time.sleep(0.1)
        return f"not ready within {self.start_timeout:.0f} s (setting deploy_start_timeout_seconds)"

    def client(self, slot: Slot | None = None) -> httpx.Client:
        """A keep-alive client for one color's private port, or for the public URL (made once: building one
        costs tens of milliseconds, which would swamp the latency gate)."""
        base = f"http://{self.host}:{slot.detail['port']}" if slot else self.url
        if base not in self._clients:
            self._clients[base] = httpx.Client(base_url=base, headers={"X-API-Key": self.key()}, timeout=10)
        return self._clients[base]

    def score(self, slot: Slot | None, records: list[dict]) -> tuple[list[float], str]:
        response = self.client(slot).post("/score", json=records)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        body = response.json()
        return body["probabilities"], body["model_version"]

    def switch(self, new: Slot, old: Slot | None) -> None:
        if old is not None:
            fd = send_command(Path(old.detail["control"]), "handover")
        else:
            try:
                listener = socket.create_server((self.host, self.port), backlog=1024)
            except OSError as exc:
                raise RolloutError(
                    f"cannot listen on {self.url}: {exc}; another program holds the port: stop it or set "
                    "FIN_BEHAVIOR_ENDPOINT_PORT"
                ) from None
            fd = os.dup(listener.fileno())
            listener.close()
        try:
            send_command(Path(new.detail["control"]), "adopt", fd)
        finally:
            os.close(fd)
        self._set_color(new.color, status="live")
        self._update(live=new.color)

    def switch_back(self, new: Slot, old: Slot | None) -> None:
        if process_alive(new.detail.get("pid")):
            send_command(Path(new.detail["control"]), "release")
        self._update(live=old.color if old else None)

    def ready(self, slot: Slot | None) -> bool:
        try:
            return self.client(slot).get("/ready").status_code == 200
        except httpx.TransportError:
            return False

    def retire(self, slot: Slot, keep: bool) -> None:
        send_command(Path(slot.detail["control"]), "release" if keep else "retire")  # answers once drained
        if not keep:
            self._wait_exit(slot.detail["pid"], timeout=10.0)
        self._set_color(slot.color, status="idle" if keep else "stopped")
        history = self.state()["history"][-19:]
        self._update(history=[*history, {"version": slot.version, "color": slot.color, "replaced_at": time.time()}])

    def discard(self, slot: Slot) -> None:
        self.stop(slot)
        self._set_color(slot.color, status="failed")

    def stop(self, slot: Slot, timeout: float = 15.0) -> None:
        pid = slot.detail.get("pid")
        if process_alive(pid):
            os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout):
                os.kill(pid, signal.SIGKILL)
        self._set_color(slot.color, status="stopped")
        if self.state()["live"] == slot.color:
            self._update(live=None)

    @staticmethod
    def _wait_exit(pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not process_alive(pid)

    def stop_all(self) -> None:
        for color in self.state()["colors"]:
            self.stop(self.slot(color))

    def logs(self, slot: Slot, lines: int = 40) -> str:
        path = Path(slot.detail.get("log", ""))
        if not path.is_file():
            return ""
        with path.open(errors="replace") as log:  # streamed: a long-lived color's log can be large
            return "".join(collections.deque(log, maxlen=lines)).rstrip("\n")

    def status(self) -> dict[str, Any]:
        state = self.state()
        for entry in state["colors"].values():
            entry["running"] = process_alive(entry.get("pid"))
        return state
