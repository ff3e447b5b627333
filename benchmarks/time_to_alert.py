"""Time from a shifted replay to the failed check and the alert.

    .venv/bin/python benchmarks/time_to_alert.py

On a new state directory: `full_pipeline` (a small search: this measures monitoring, not training) puts a model
in service; then 1,000 rows of the training data with ages +25 years and utilisation doubled are replayed
through the endpoint's URL (50 requests of 20 rows), and `dagster job execute -j monitor` runs, as the schedule
would, with FIN_BEHAVIOR_ALERT_WEBHOOK_URL pointing at a receiver on loopback. Reports when the replay ended,
when input_drift had failed (the monitor command's end) and when the alert arrived, counted from the replay's
start. The schedule runs the job every 5 minutes, so in operation up to 5 minutes of waiting come on top.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pandas as pd

from fin_behavior.data.columns import FEATURES
from fin_behavior.deploy.local import free_port

BIN = Path(sys.executable).parent
RECEIVED: list[tuple[float, dict]] = []


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        RECEIVED.append((time.monotonic(), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_) -> None:
        pass


def dagster(env: dict[str, str], job: str, config: Path) -> None:
    command = [str(BIN / "dagster"), "job", "execute", "-m", "fin_behavior.definitions", "-j", job, "-c", str(config)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{job} failed:\n{done.stderr[-3000:]}")


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        var, home = Path(tmp) / "var", Path(tmp) / "dagster_home"
        home.mkdir(parents=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        port = free_port()
        env = os.environ | {
            "DAGSTER_HOME": str(home),
            "FIN_BEHAVIOR_VAR_DIR": str(var),
            "FIN_BEHAVIOR_ENDPOINT_PORT": str(port),
            "FIN_BEHAVIOR_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{server.server_address[1]}/hook",
        }
        small = Path(tmp) / "small.yaml"
        small.write_text("ops: {trained_model: {config: {n_iter: 2, cv: 2}}}\n")
        window = Path(tmp) / "window.yaml"
        window.write_text("ops: {serving_quality: {config: {monitor_window_minutes: 1}}}\n")
        dagster(env, "full_pipeline", small)
        try:
            dataset = next((var / "artifacts" / "processed_dataset").glob("*/processed_dataset.parquet"))
            rows = json.loads(
                pd.read_parquet(dataset).sample(1_000, random_state=0)[list(FEATURES)].to_json(orient="records")
            )
            shifted = [r | {"age": r["age"] + 25, "credit_utilisation": r["credit_utilisation"] * 2} for r in rows]
            key = json.loads((var / "endpoint" / "keys.json").read_text())["keys"][0]
            started = time.monotonic()
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}) as client:
                for i in range(0, len(shifted), 20):
                    client.post("/score", json=shifted[i : i + 20]).raise_for_status()
            replayed = time.monotonic() - started
            time.sleep(0.5)  # the service writes its log every 0.5 s
            dagster(env, "monitor", window)
            judged = time.monotonic() - started
        finally:
            subprocess.run([str(BIN / "fin-behavior"), "endpoint", "stop"], env=env, capture_output=True)
    server.shutdown()
    alerted = next((at - started, body) for at, body in RECEIVED if body["check"] == "input_drift")
    print("| step | seconds from the replay's start |\n|---|---:|")
    print(f"| replay of 1,000 shifted rows ends | {replayed:.1f} |")
    print(f"| alert received (input_drift) | {alerted[0]:.1f} |")
    print(f"| `dagster job execute -j monitor` ends | {judged:.1f} |")
    print(f"\nthe alert: {alerted[1]['text']}")


if __name__ == "__main__":
    main()
