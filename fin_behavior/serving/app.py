"""The scoring service: one verified model bundle behind an ASGI app on uvicorn. POST /score is answered by the
service object itself (the hot path, no routing or middleware); the other endpoints by a small Starlette app.

    <serving env>/bin/python -m fin_behavior.serving.app --bundle DIR --keys-file FILE --model-version 3

Endpoints: POST /score (key required), POST /feedback (outcomes by request id, feedback.py; key required), GET
/version and /metrics (key required), GET /health (liveness),
GET /ready (bundle loaded and verified), GET /openapi.json, and the Open Inference Protocol's /v2 routes
(oip.py; inference through the same hot path as /score). Every answer is JSON, every client mistake a 4xx
that names it. A scoring request authenticated with the platform's probe key (config.read_probe_keys) is the
platform checking its own endpoint: logged and counted as a probe, apart from the clients' traffic. No client
can starve the others: a request takes a place in the scoring queue only once its
whole body has arrived, and a full queue is a 503 with Retry-After, not an unbounded wait (protocol.py); a body
still arriving must arrive within `body_timeout_seconds` (408), and only so many may be arriving at once.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from fin_behavior.serving import oip
from fin_behavior.serving.bundle import Bundle, BundleError, load_bundle
from fin_behavior.serving.config import ServiceSettings, read_keys, read_probe_keys
from fin_behavior.serving.explain import Explanations
from fin_behavior.serving.feedback import FeedbackLog
from fin_behavior.serving.openapi import openapi_schema
from fin_behavior.serving.prediction_log import PredictionLog, client_id
from fin_behavior.serving.request_ids import is_valid, request_id_for, subject_refusal
from fin_behavior.serving.scoring import Scored, score_request
from fin_behavior.serving.traffic import ChallengerTraffic, Relayed
from fin_behavior.serving.validation import InputError

log = logging.getLogger("fin_behavior.serving")
KEY_HINT = "send it as X-API-Key or Authorization: Bearer <key>"
_PREDICT_WORKERS = 4  # threads a submitted model predicts in; a stuck one holds its thread, not the service
CLIENT, PROBE = "client", "probe"  # who sent a scoring request, by its key (see config.read_probe_keys)


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    scored: Scored | None = None
    close: bool = False  # the connection must not be reused (the rest of a body was never read)
    relayed: Relayed | None = None  # answered by a split's challenger (traffic.py): its answer, as it came

    @classmethod
    def error(cls, status: int, message: str, close: bool = False) -> Reply:
        return cls(status, {"error": message}, close=close)

    @classmethod
    def failed(cls, exc: Exception) -> Reply:
        """Scoring raised: the client's mistake (InputError) as its 4xx, anything else a 500 without internals (the
        trace goes to the service log)."""
        if isinstance(exc, InputError):
            return cls.error(exc.status, exc.message)
        log.exception("scoring failed")
        return cls.error(500, "internal error while scoring; see the service log")


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
        self.in_flight = Gauge(
            "fin_behavior_in_flight", "POST /score requests being received or scored", registry=self.registry
        )
        self.unknown = Counter(
            "fin_behavior_unknown_category",
            "Records scored with a category value the model never saw, by field",
            ["field"],
            registry=self.registry,
        )
        self.probes = Counter(
            "fin_behavior_probe_requests",
            "The platform's own scoring requests (probe key), by endpoint and status: not in the figures above",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.model = Gauge("fin_behavior_model_info", "The model version served", ["version"], registry=self.registry)
        self.model.labels(version=version).set(1)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def _missing_key() -> Response:
    return JSONResponse({"error": f"missing or invalid API key: {KEY_HINT}"}, status_code=401)


async def _json_error(_: Request, exc: Exception) -> Response:
    """Starlette's own 404 / 405 (with its Allow header), as JSON like every other answer."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


class ScoringService:
    """The ASGI application. `__call__` answers POST /score itself; everything else goes to `self.rest`."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.keys = [k.encode() for k in read_keys(settings.keys_file)]
        self.probe_keys = [k.encode() for k in read_probe_keys(settings.keys_file)]
        self.client_ids = {key: client_id(key) for key in self.keys}  # how the log names the key that asked
        self.metrics = _Metrics(settings.model_version)
        self.predictions = (
            PredictionLog(
                settings.prediction_log,
                settings.model_version,
                settings.log_sample_rate,
                settings.log_max_bytes,
                settings.log_keep_files,
            )
            if settings.prediction_log
            else None
        )
        self.feedback_log = FeedbackLog(settings.prediction_log, settings.log_max_bytes, settings.log_keep_files)
        self.bundle: Bundle | None = None
        self.predict_pool: ThreadPoolExecutor | None = None  # set for a model whose code is not the platform's
        self.refusal = "not loaded yet"
        self.pending_bodies = 0
        self.traffic = ChallengerTraffic(self.metrics.registry)  # a shadow or split challenger, when one is set
        self._version_header = [(b"x-model-version", settings.model_version.encode())]
        self._latency = {e: self.metrics.latency.labels(e) for e in ("score", "infer")}
        self._counts: dict[tuple[str, int], Any] = {}  # (endpoint, status) -> its counter, bound once
        try:
            self.bundle = load_bundle(settings.bundle_dir, settings.bundle_digest)
            self.refusal = ""
            if settings.predict_timeout_seconds is not None and self.bundle.info.runtime == "pyfunc":
                self.predict_pool = ThreadPoolExecutor(_PREDICT_WORKERS, thread_name_prefix="predict")
        except BundleError as exc:
            self.refusal = str(exc)
            log.error("model bundle refused, service stays not-ready: %s", exc)
        flush = self.predictions.flush if self.predictions else None
        # off the hot path: its own worker process, its own limit (explain.py)
        self.explanations = Explanations(settings, self.bundle, self._client_of, flush, self._read_body, self.traffic)
        self.rest = Starlette(
            routes=[
                Route("/health", self.health, methods=["GET"]),
                Route("/ready", self.ready, methods=["GET"]),
                Route("/version", self.version, methods=["GET"]),
                Route("/metrics", self.metrics_text, methods=["GET"]),
                Route("/openapi.json", self.openapi, methods=["GET"]),
                Route("/feedback", self.feedback, methods=["POST"]),
                Route("/v2", self.oip_server, methods=["GET"]),
                Route("/v2/health/live", self.health, methods=["GET"]),
                Route("/v2/health/ready", self.ready, methods=["GET"]),
                Route("/v2/models/{name}", self.oip_model, methods=["GET"]),
                Route("/v2/models/{name}/versions/{version}", self.oip_model, methods=["GET"]),
                Route("/v2/models/{name}/ready", self.oip_model_ready, methods=["GET"]),
                Route("/v2/models/{name}/versions/{version}/ready", self.oip_model_ready, methods=["GET"]),
                *self.explanations.routes(),
            ],
            exception_handlers={HTTPException: _json_error},
            lifespan=self.lifespan,
        )

    # The hot path ------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == "/score":
                return await self._scoring(scope, receive, send, "score", self._score)
            if path.startswith("/v2/models/") and (infer := oip.INFER_PATH.match(path)):
                return await self._scoring(scope, receive, send, "infer", functools.partial(self._infer, infer))
        return await self.rest(scope, receive, send)

    async def _scoring(self, scope: Scope, receive: Any, send: Any, endpoint: str, scorer: Any) -> None:
        """A scoring request of either protocol: the same key, limits, queue, metrics and prediction log."""
        started = time.perf_counter()
        request_id, refused = request_id_for(_header(scope, b"x-request-id"))  # request_ids.py
        if scope["method"] != "POST":
            reply = Reply.error(405, f"use POST {scope['path'][:80]}, not {scope['method']}")
            await self._send(send, reply, request_id, [(b"allow", b"POST")])
            return
        subject = _header(scope, b"x-subject-id")
        if subject and refused is None and not is_valid(subject):
            refused = subject_refusal(subject)
        self.metrics.in_flight.inc()
        caller, client = self._who(scope)
        # a split's share goes to the challenger; the platform's probes always reach the champion (traffic.py)
        split = endpoint == "score" and caller == CLIENT and self.traffic.wants("split", request_id, subject)
        try:
            reply, raw = await self._answer(scope, receive, scorer, caller, refused, split, request_id)
            sent = await self._send(send, reply, request_id)
        finally:
            self.metrics.in_flight.dec()
        self._record(endpoint, reply, raw, sent, time.perf_counter() - started, caller == PROBE, request_id, client)
        if raw and endpoint == "score" and caller == CLIENT and self.traffic.wants("shadow", request_id, subject):
            self.traffic.copy(raw, request_id, client)  # after the answer went out, one send(): off the hot path

    def score_copy(self, request_id: str, client: str, raw: bytes) -> None:
        """A shadow's copy of a live request (traffic.py): scored and logged as a POST /score of its body would be,
        under the live request's id and client, so the client's labels join (and pair) both versions' decisions;
        the answer goes nowhere."""
        started = time.perf_counter()
        try:
            scored = self._score(raw)
            reply = Reply(200, scored.answer, scored)
        except Exception as exc:
            reply = Reply.failed(exc)
        reply.body["request_id"] = request_id
        answer = json.dumps(reply.body, separators=(",", ":")).encode()
        self._record("score", reply, raw, answer, time.perf_counter() - started, False, request_id, client)

    def _score(self, raw: bytes) -> Scored:
        assert self.bundle is not None
        return score_request(self.bundle, raw, self.settings.max_rows, self.settings.model_version)

    def _infer(self, path: re.Match, raw: bytes) -> Scored:
        assert self.bundle is not None
        name, version = self.settings.model_name, self.settings.model_version
        if refused := oip.unknown_model(path["name"], path["version"], name, version):
            raise InputError(404, refused)
        return oip.infer(self.bundle, raw, self.settings.max_rows, name, version)

    async def _answer(
        self,
        scope: Scope,
        receive: Any,
        scorer: Any,
        caller: str | None,
        refused: str | None,
        split: bool = False,
        request_id: str = "",
    ) -> tuple[Reply, bytes]:
        if caller is None:
            return Reply.error(401, f"missing or invalid API key: {KEY_HINT}"), b""
        if refused is not None:  # a malformed X-Request-ID or X-Subject-ID
            return Reply.error(400, refused), b""
        if self.bundle is None:
            return Reply.error(503, f"model not loaded: {self.refusal}"), b""
        try:
            raw = await self._read_body(scope, receive)
        except InputError as exc:
            return Reply.error(exc.status, exc.message, close=exc.status in (408, 413, 503)), b""
        if split and (relayed := await self.traffic.answer(raw, scope["headers"], request_id)) is not None:
            return Reply(relayed.status, {}, relayed=relayed), raw
        try:
            scored = scorer(raw) if self.predict_pool is None else await self._bounded_predict(scorer, raw)
            return Reply(200, scored.answer, scored), raw
        except Exception as exc:
            return Reply.failed(exc), raw

    async def _bounded_predict(self, scorer: Any, raw: bytes) -> Scored:
        """A model whose code the platform did not write predicts in worker threads, so a slow or stuck predict
        costs a 504 to the requests it holds up and never freezes the event loop (health, readiness, the control
        socket). Requests wait for a worker within the service's queue bound (max_queued, then 503)."""
        assert self.predict_pool is not None and self.settings.predict_timeout_seconds is not None
        future = self.predict_pool.submit(scorer, raw)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.settings.predict_timeout_seconds)
        except TimeoutError:
            future.cancel()  # if it is still waiting for a worker; a running predict keeps its thread
            seconds = self.settings.predict_timeout_seconds
            raise InputError(504, f"the model did not answer within {seconds:g} s") from None

    async def _read_body(self, scope: Scope, receive: Any) -> bytes:
        """The whole body, within the size and time limits. A body that arrives with its headers (nearly every
        request) is read at once; only one still arriving counts against the pending cap and the deadline."""
        limit = self.settings.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            raise InputError(413, f"body of {declared} bytes exceeds the {limit}-byte limit")
        message = await receive()
        chunks, size = [message.get("body", b"")], len(message.get("body", b""))
        if not message.get("more_body", False) and message["type"] == "http.request":
            return chunks[0]
        if self.pending_bodies >= self.settings.max_pending_bodies:
            raise InputError(503, "too many requests are still sending their body; retry shortly")
        self.pending_bodies += 1
        try:
            async with asyncio.timeout(self.settings.body_timeout_seconds):
                while message["type"] == "http.request" and message.get("more_body", False):
                    message = await receive()
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise InputError(413, f"body exceeds the {limit}-byte limit")
                    chunks.append(chunk)
        except TimeoutError:
            raise InputError(
                408, f"the body did not arrive within {self.settings.body_timeout_seconds:g} s; send it at once"
            ) from None
        finally:
            self.pending_bodies -= 1
        if message["type"] == "http.disconnect":
            raise InputError(499, "client disconnected before sending the whole body")
        return b"".join(chunks)

    async def _send(
        self, send: Any, reply: Reply, request_id: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> bytes:
        reply.body["request_id"] = request_id  # every answer names its decision, errors too (request_ids.py)
        relayed = reply.relayed  # the challenger's answer names its own version and the same request id
        body = relayed.body if relayed else json.dumps(reply.body, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            *([(b"x-model-version", relayed.version.encode())] if relayed else self._version_header),
            (b"x-request-id", request_id.encode()),
            (b"content-length", str(len(body)).encode()),  # not chunked
            *(extra or ()),
        ]
        if reply.status == 503:
            headers.append((b"retry-after", b"1"))
        if reply.close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return body

    def _record(
        self,
        endpoint: str,
        reply: Reply,
        raw: bytes,
        response: bytes,
        elapsed: float,
        probe: bool,
        request_id: str,
        client: str = "",
    ) -> None:
        status = reply.status
        rows = reply.scored.rows if reply.scored else 0
        if probe:  # the platform's own request: its own count and log line, none of the clients' figures
            self.metrics.probes.labels(endpoint, status).inc()
            if self.predictions is not None:
                self.predictions.write(elapsed, status, rows, raw, {}, b"", request_id, True)
            return
        counter = self._counts.get((endpoint, status)) or self._counts.setdefault(
            (endpoint, status), self.metrics.requests.labels(endpoint, status)
        )
        counter.inc()
        self._latency[endpoint].observe(elapsed)
        if reply.relayed:  # the challenger logged its own decision under this request id
            return
        scored = reply.scored
        unknown = scored.unknown if scored else {}
        for name, count in unknown.items():
            self.metrics.unknown.labels(name).inc(count)
        if self.predictions is not None:
            if scored is not None and scored.logged_request is not None:  # another protocol: log the /score form
                raw, response = scored.logged_request, scored.logged_answer or response
            self.predictions.write(elapsed, status, rows, raw, unknown, response, request_id, client=client)

    def _who(self, scope: Scope) -> tuple[str | None, str]:
        """(CLIENT or PROBE by the key offered, every key compared in constant time, None without a valid key;
        the client's name in the log: its key's `client_id`, "" for a probe). A logged decision is explained only
        to the client whose key made it (explain.py)."""
        offered = (_header(scope, b"x-api-key") or _header(scope, b"authorization")).removeprefix("Bearer ")
        offered_bytes = offered.encode("latin-1")
        client = any([hmac.compare_digest(offered_bytes, key) for key in self.keys])
        probe = any([hmac.compare_digest(offered_bytes, key) for key in self.probe_keys])
        if probe or not client:
            return (PROBE if probe else None), ""
        return CLIENT, self.client_ids[offered_bytes]  # a valid client key: one of the keys named there

    def _caller(self, scope: Scope) -> str | None:
        return self._who(scope)[0]

    def _authorized(self, scope: Scope) -> bool:
        return self._caller(scope) is not None

    def _client_of(self, scope: Scope) -> str | None:
        """The asking client's name in the log ("" for the probe key), None without a valid key (explain.py)."""
        caller, client = self._who(scope)
        return None if caller is None else client

    # Everything else ---------------------------------------------------------------------------------------

    def _key_required(self, request: Request) -> Response | None:
        return None if self._authorized(request.scope) else _missing_key()

    async def feedback(self, request: Request) -> Response:
        """True outcomes by request id (serving/feedback.py); the same key as /score. A label joins only the
        decisions of the key that posted it (the probe key's, any)."""
        client = self._client_of(request.scope)
        if client is None:
            return _missing_key()
        try:
            raw = await self._read_body(request.scope, request.receive)
        except InputError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return await self.feedback_log.receive(raw, client)

    async def health(self, _: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def ready(self, _: Request) -> Response:
        if self.bundle is None:
            return JSONResponse({"ready": False, "reason": self.refusal}, status_code=503)
        version = self.settings.model_version
        return JSONResponse({"ready": True, "model_version": version}, headers={"X-Model-Version": version})

    async def version(self, request: Request) -> Response:
        if refused := self._key_required(request):
            return refused
        info = self.bundle.info if self.bundle else None
        return JSONResponse(
            {
                "model_version": self.settings.model_version,
                "runtime": info and info.runtime,
                "package_versions": info and info.package_versions,
                "data_version": info and info.data_version,
                "decision_threshold": info and info.decision_threshold,
                "bundle_digest": info and info.digest,
            },
            headers={"X-Model-Version": self.settings.model_version},
        )

    async def metrics_text(self, request: Request) -> Response:
        if refused := self._key_required(request):
            return refused
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def oip_server(self, _: Request) -> Response:
        return JSONResponse(oip.server_metadata(self.settings.model_version))

    def _oip_unknown(self, request: Request) -> Response | None:
        params = request.path_params
        name, version = self.settings.model_name, self.settings.model_version
        refused = oip.unknown_model(params["name"], params.get("version"), name, version)
        return JSONResponse({"error": refused}, status_code=404) if refused else None

    async def oip_model(self, request: Request) -> Response:
        if unknown := self._oip_unknown(request):
            return unknown
        if self.bundle is None:
            return JSONResponse({"error": f"model not loaded: {self.refusal}"}, status_code=503)
        info, settings = self.bundle.info, self.settings
        probabilities = info.runtime != "pyfunc"  # a submitted MLflow model answers predictions only
        metadata = oip.model_metadata(settings.model_name, settings.model_version, info.features, probabilities)
        return JSONResponse(metadata)

    async def oip_model_ready(self, request: Request) -> Response:
        return self._oip_unknown(request) or await self.ready(request)

    async def openapi(self, _: Request) -> Response:
        features = self.bundle.info.features if self.bundle else []
        raw = self.bundle is not None and not self.bundle.schema.refusal  # the bank's record too
        return JSONResponse(openapi_schema(features, self.settings.max_rows, raw))

    @asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        flusher = asyncio.create_task(self.predictions.flush_periodically()) if self.predictions else None
        yield
        await self.traffic.close()
        self.explanations.close()
        if flusher is not None and self.predictions is not None:
            flusher.cancel()
            self.predictions.close()  # writes what is still buffered


def _parser() -> argparse.ArgumentParser:
    """The command line, built from ServiceSettings so each default is written once."""
    parser = argparse.ArgumentParser(description="Serve a verified fin_behavior model bundle")
    required = {"bundle_dir": "--bundle", "keys_file": "--keys-file", "model_version": "--model-version"}
    for field in dataclasses.fields(ServiceSettings):
        flag = required.get(field.name, "--" + field.name.replace("_", "-"))
        kind = {"int": int, "float": float}.get(str(field.type).split(" ")[0], str)
        if "Path" in str(field.type):
            kind = Path
        if field.name in required:
            parser.add_argument(flag, dest=field.name, type=kind, required=True)
        else:
            parser.add_argument(flag, dest=field.name, type=kind, default=field.default)
    return parser


def main() -> None:
    parser = _parser()
    settings = ServiceSettings(**vars(parser.parse_args()))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = ScoringService(settings)
    except ValueError as exc:  # an unusable keys file: say so instead of a traceback
        parser.exit(2, f"fin_behavior.serving.app: error: {exc}\n")
    from fin_behavior.serving.handoff import ColorServer

    log.info("serving model version %s on %s:%d", settings.model_version, settings.host, settings.port)
    ColorServer(app, settings).run()


if __name__ == "__main__":
    main()
