"""The scoring service: an ASGI app (Starlette on uvicorn) serving one verified model bundle.

    <serving env>/bin/python -m fin_behavior.serving.app --bundle DIR --keys-file FILE --port 8080

Endpoints: POST /score (key required), GET /version and /metrics (key required), GET /health (liveness),
GET /ready (bundle loaded and verified), GET /openapi.json. Client mistakes get a 4xx naming the field;
overload gets 503 with Retry-After rather than an unbounded queue.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import logging.handlers
import queue
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


def _prediction_logger(path: Path | None) -> tuple[logging.Logger, logging.handlers.QueueListener | None]:
    """JSON lines through a queue: the request path only enqueues, a thread writes the file."""
    logger = logging.getLogger(f"fin_behavior.predictions.{id(path)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    if path is None:
        logger.disabled = True
        return logger, None
    path.parent.mkdir(parents=True, exist_ok=True)
    records: queue.SimpleQueue = queue.SimpleQueue()
    logger.addHandler(logging.handlers.QueueHandler(records))
    listener = logging.handlers.QueueListener(records, logging.FileHandler(path))
    listener.start()
    return logger, listener


def create_app(settings: ServiceSettings) -> Starlette:
    keys = [k.encode() for k in read_keys(settings.keys_file)]
    metrics = _Metrics(settings.model_version)
    predictions, listener = _prediction_logger(settings.prediction_log)
    state: dict[str, Any] = {"bundle": None, "error": "not loaded yet", "in_flight": 0}
    version_header = {"X-Model-Version": settings.model_version}

    try:
        state["bundle"] = load_bundle(settings.bundle_dir)
        state["error"] = None
    except BundleError as exc:
        state["error"] = str(exc)
        log.error("model bundle refused, service stays not-ready: %s", exc)

    def authorized(request: Request) -> bool:
        offered = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        offered_bytes = offered.encode()
        return any(hmac.compare_digest(offered_bytes, key) for key in keys)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=version_header)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise InputError(413, f"body of {declared} bytes exceeds the {settings.max_body_bytes}-byte limit")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_body_bytes:
                raise InputError(413, f"body exceeds the {settings.max_body_bytes}-byte limit")
        return bytes(body)

    async def score(request: Request) -> Response:
        started = time.perf_counter()
        if not authorized(request):
            metrics.requests.labels("score", "401").inc()
            return error(401, "missing or invalid API key: send it as X-API-Key or Authorization: Bearer <key>")
        bundle: Bundle | None = state["bundle"]
        if bundle is None:
            metrics.requests.labels("score", "503").inc()
            return error(503, f"model not loaded: {state['error']}")
        if state["in_flight"] >= settings.max_in_flight:
            metrics.requests.labels("score", "503").inc()
            return JSONResponse(
                {"error": "too many requests in flight; retry shortly"},
                status_code=503,
                headers=version_header | {"Retry-After": "1"},
            )
        state["in_flight"] += 1
        metrics.in_flight.inc()
        status, rows, raw = 200, 0, b""
        try:
            raw = await read_body(request)
            payload, rows = score_request(bundle, raw, settings.max_rows, settings.model_version)
            return JSONResponse(payload, headers=version_header)
        except InputError as exc:
            status = exc.status
            return error(exc.status, exc.message)
        except Exception:  # a server fault: logged with its trace, the client gets no internals
            status = 500
            log.exception("scoring failed")
            return error(500, "internal error while scoring; see the service log")
        finally:
            state["in_flight"] -= 1
            metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            metrics.requests.labels("score", str(status)).inc()
            metrics.latency.labels("score").observe(elapsed)
            if not predictions.disabled:  # building the line costs time; skip it when nothing is written
                predictions.info(
                    json.dumps(
                        {
                            "time": time.time(),
                            "model_version": settings.model_version,
                            "latency_ms": round(elapsed * 1e3, 3),
                            "outcome": status,
                            "rows": rows,
                            "inputs_sha256": hashlib.sha256(raw).hexdigest()[:16],
                        }
                    )
                )

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def ready(_: Request) -> Response:
        if state["bundle"] is None:
            return JSONResponse({"ready": False, "reason": state["error"]}, status_code=503)
        return JSONResponse({"ready": True, "model_version": settings.model_version}, headers=version_header)

    async def version(request: Request) -> Response:
        if not authorized(request):
            return error(401, "missing or invalid API key")
        info = state["bundle"].info if state["bundle"] else {}
        return JSONResponse(
            {
                "model_version": settings.model_version,
                "runtime": info.get("runtime"),
                "package_versions": info.get("package_versions"),
                "data_version": info.get("data_version"),
            },
            headers=version_header,
        )

    async def metrics_endpoint(request: Request) -> Response:
        if not authorized(request):
            return error(401, "missing or invalid API key")
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(_: Request) -> Response:
        features = state["bundle"].features if state["bundle"] else []
        return JSONResponse(openapi_schema(features, settings.max_rows))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        if listener is not None:
            listener.stop()  # flush the prediction log

    return Starlette(
        routes=[
            Route("/score", score, methods=["POST"]),
            Route("/health", health),
            Route("/ready", ready),
            Route("/version", version),
            Route("/metrics", metrics_endpoint),
            Route("/openapi.json", openapi),
        ],
        lifespan=lifespan,
    )


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
