"""The scoring service: an ASGI app on uvicorn serving one verified model bundle (POST /score is a plain
ASGI handler, the hot path; the other endpoints a Starlette app).

    <serving env>/bin/python -m fin_behavior.serving.app --bundle DIR --keys-file FILE --port 8080

Endpoints: POST /score (key required), GET /version and /metrics (key required), GET /health (liveness),
GET /ready (bundle loaded and verified), GET /openapi.json. Client mistakes get a 4xx naming the field;
overload gets 503 with Retry-After rather than an unbounded queue.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fin_behavior.serving.bundle import Bundle, BundleError, load_bundle
from fin_behavior.serving.openapi import openapi_schema
from fin_behavior.serving.scoring import score_request
from fin_behavior.serving.validation import InputError

log = logging.getLogger("fin_behavior.serving")
KEY_HINT = "send it as X-API-Key or Authorization: Bearer <key>"


@dataclass(frozen=True)
class ServiceSettings:
    bundle_dir: Path
    keys_file: Path
    model_version: str
    max_rows: int = 1_000
    max_body_bytes: int = 1 << 20
    max_in_flight: int = 64
    prediction_log: Path | None = None


def read_keys(path: Path) -> list[str]:
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


class _Metrics:
    def __init__(self, version: str):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fin_behavior_requests", "Requests by endpoint and status", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "fin_behavior_request_seconds",
            "Request latency",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.in_flight = Gauge("fin_behavior_in_flight", "Scoring requests in progress", registry=self.registry)
        self.model = Gauge("fin_behavior_model_info", "The model version served", ["version"], registry=self.registry)
        self.model.labels(version=version).set(1)


class PredictionLog:
    """One JSON line per scored request. The request path only appends to a 64 KiB buffer (no lock, no
    syscall); a task on the event loop flushes it every `flush_seconds` and at shutdown, so a reader sees
    a line at most that much later."""

    def __init__(self, path: Path, model_version: str, flush_seconds: float = 0.5):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_seconds = flush_seconds
        self._file = path.open("a", buffering=1 << 16)
        self._version = json.dumps(model_version)

    def write(self, latency_s: float, outcome: int, rows: int, body: bytes) -> None:
        self._file.write(
            f'{{"time": {time.time():.6f}, "model_version": {self._version}, "latency_ms": {latency_s * 1e3:.3f}, '
            f'"outcome": {outcome}, "rows": {rows}, "inputs_sha256": "{hashlib.sha256(body).hexdigest()[:16]}"}}\n'
        )

    async def flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            self._file.flush()

    def close(self) -> None:
        self._file.close()


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def create_app(settings: ServiceSettings) -> Any:
    keys = [k.encode() for k in read_keys(settings.keys_file)]
    metrics = _Metrics(settings.model_version)
    predictions = PredictionLog(settings.prediction_log, settings.model_version) if settings.prediction_log else None
    state: dict[str, Any] = {"bundle": None, "error": "not loaded yet", "in_flight": 0}
    version_header = {"X-Model-Version": settings.model_version}
    score_headers = [(b"content-type", b"application/json"), (b"x-model-version", settings.model_version.encode())]
    score_latency = metrics.latency.labels("score")
    score_counts: dict[int, Any] = {}  # status -> its counter, bound once

    try:
        state["bundle"] = load_bundle(settings.bundle_dir)
        state["error"] = None
    except BundleError as exc:
        state["error"] = str(exc)
        log.error("model bundle refused, service stays not-ready: %s", exc)

    def authorized(offered: str) -> bool:
        offered_bytes = offered.removeprefix("Bearer ").encode()
        return any(hmac.compare_digest(offered_bytes, key) for key in keys)

    def request_key(scope: dict) -> str:
        return _header(scope, b"x-api-key") or _header(scope, b"authorization")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=version_header)

    async def read_body(scope: dict, receive: Any) -> bytes:
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise InputError(413, f"body of {declared} bytes exceeds the {settings.max_body_bytes}-byte limit")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InputError(499, "client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise InputError(413, f"body exceeds the {settings.max_body_bytes}-byte limit")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def answer_score(scope: dict, receive: Any) -> tuple[int, dict[str, Any], int, bytes]:
        """(status, answer, rows scored, body)."""
        if not authorized(request_key(scope)):
            return 401, {"error": f"missing or invalid API key: {KEY_HINT}"}, 0, b""
        bundle: Bundle | None = state["bundle"]
        if bundle is None:
            return 503, {"error": f"model not loaded: {state['error']}"}, 0, b""
        if state["in_flight"] >= settings.max_in_flight:
            return 503, {"error": "too many requests in flight; retry shortly"}, 0, b""
        state["in_flight"] += 1
        metrics.in_flight.inc()
        raw = b""
        try:
            raw = await read_body(scope, receive)
            answer, rows = score_request(bundle, raw, settings.max_rows, settings.model_version)
            return 200, answer, rows, raw
        except InputError as exc:
            return exc.status, {"error": exc.message}, 0, raw
        except Exception:  # a server fault: logged with its trace, the client gets no internals
            log.exception("scoring failed")
            return 500, {"error": "internal error while scoring; see the service log"}, 0, raw
        finally:
            state["in_flight"] -= 1
            metrics.in_flight.dec()

    async def score(scope: dict, receive: Any, send: Any) -> None:
        """POST /score as a plain ASGI handler: the hot path skips the framework's routing and middleware."""
        started = time.perf_counter()
        status, answer, rows, raw = await answer_score(scope, receive)
        body = json.dumps(answer, separators=(",", ":")).encode()
        headers = [*score_headers, (b"content-length", str(len(body)).encode())]  # not chunked
        if status == 503:
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        elapsed = time.perf_counter() - started
        counter = score_counts.get(status) or score_counts.setdefault(status, metrics.requests.labels("score", status))
        counter.inc()
        score_latency.observe(elapsed)
        if predictions is not None:
            predictions.write(elapsed, status, rows, raw)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def ready(_: Request) -> Response:
        if state["bundle"] is None:
            return JSONResponse({"ready": False, "reason": state["error"]}, status_code=503)
        return JSONResponse({"ready": True, "model_version": settings.model_version}, headers=version_header)

    async def version(request: Request) -> Response:
        if not authorized(request_key(request.scope)):
            return error(401, "missing or invalid API key")
        info = state["bundle"].info if state["bundle"] else None
        return JSONResponse(
            {
                "model_version": settings.model_version,
                "runtime": info and info.runtime,
                "package_versions": info and info.package_versions,
                "data_version": info and info.data_version,
                "decision_threshold": info and info.decision_threshold,
            },
            headers=version_header,
        )

    async def metrics_endpoint(request: Request) -> Response:
        if not authorized(request_key(request.scope)):
            return error(401, "missing or invalid API key")
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(_: Request) -> Response:
        features = state["bundle"].info.features if state["bundle"] else []
        return JSONResponse(openapi_schema(features, settings.max_rows))

    async def score_method_not_allowed(_: Request) -> Response:
        return JSONResponse({"error": "use POST /score"}, status_code=405, headers={"Allow": "POST"})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        flusher = asyncio.create_task(predictions.flush_periodically()) if predictions else None
        yield
        if flusher is not None:
            flusher.cancel()
            predictions.close()  # writes what is still buffered

    rest = Starlette(
        routes=[
            Route("/score", score_method_not_allowed),
            Route("/health", health),
            Route("/ready", ready),
            Route("/version", version),
            Route("/metrics", metrics_endpoint),
            Route("/openapi.json", openapi),
        ],
        lifespan=lifespan,
    )

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/score" and scope["method"] == "POST":
            return await score(scope, receive, send)
        return await rest(scope, receive, send)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a verified fin_behavior model bundle")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--keys-file", type=Path, required=True)
    parser.add_argument("--model-version", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max-rows", type=int, default=1_000)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--prediction-log", type=Path)
    parser.add_argument("--control", type=Path, help="Unix socket for blue/green commands (see handoff.py)")
    parser.add_argument("--drain-seconds", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServiceSettings(
        args.bundle,
        args.keys_file,
        args.model_version,
        max_rows=args.max_rows,
        max_in_flight=args.max_in_flight,
        prediction_log=args.prediction_log,
    )
    try:
        app = create_app(settings)
    except ValueError as exc:  # an unusable keys file: say so instead of a traceback
        parser.exit(2, f"fin_behavior.serving.app: error: {exc}\n")
    from fin_behavior.serving.handoff import ColorServer

    log.info("serving model version %s on %s:%d", args.model_version, args.host, args.port)
    ColorServer(app, args.host, args.port, args.control, args.drain_seconds).run()


if __name__ == "__main__":
    main()
