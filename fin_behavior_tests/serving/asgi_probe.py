"""The scoring service in process, inside a serving environment (where onnxruntime and the server packages are):
requests go straight to the ASGI object, no socket. Run by the tests as

    <serving env>/bin/python -m fin_behavior_tests.serving.asgi_probe  < {"settings": {...}, "requests": [...]}

Each request is {"method", "path", "headers": [[name, value]], "body": str (latin-1) or null}; each reply is
{"status", "headers": {name: value}, "body": str}. Prints the replies, then the /metrics text, as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from fin_behavior.serving.app import ScoringService, ServiceSettings


async def call(app: Any, request: dict) -> dict:
    body = (request.get("body") or "").encode("latin-1")
    path, _, query = request["path"].partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request["method"],
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.get("headers", [])],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in start.get("headers", [])}
    return {"status": start["status"], "headers": headers, "body": content.decode("utf-8", "replace")}


async def main() -> None:
    job = json.load(sys.stdin)
    given = job["settings"]
    paths = {k: Path(v) for k, v in given.items() if k in ("bundle_dir", "keys_file", "prediction_log") and v}
    service = ScoringService(ServiceSettings(**(given | paths)))
    replies = [await call(service, request) for request in job["requests"]]
    if service.predictions is not None:
        service.predictions.close()
    metrics = await call(service, {"method": "GET", "path": "/metrics", "headers": job.get("metrics_headers", [])})
    json.dump({"replies": replies, "metrics": metrics["body"]}, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
