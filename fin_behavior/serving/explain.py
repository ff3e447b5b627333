"""Explanations, off the scoring path: `GET /explain/{request_id}` (a logged decision) and `POST /explain` (a /score
body), both with the scoring key. For every row: `probability` (as /score answers it), `base_value`,
`contributions` (one per business column, attribution.py: exact tree SHAP, the encoded parts summed back to the
column sent) and `reasons`, the `top` columns (default 4, `?top=`) by absolute contribution, each with the value
sent, its signed contribution and a sentence. The answer's `scale` names what base_value + sum(contributions) adds
up to: the platform's model's `probability`; a submitted model (submitted_attribution.py) answers its `prediction`
too (as /score did), and its scale may be a classifier's `log_odds` or a regressor's `prediction`.

Why a separate process: tree SHAP is CPU-bound C code that holds the GIL, and shap imports numba; in the scoring
process a burst of explanations would stall every /score behind it. The work (finding the logged decision,
encoding, SHAP) runs in `explain_workers` worker processes started on the first explanation; the scoring process
only validates, counts and forwards (a submitted model's own predict runs in the worker too, never in the event
loop). At most `explain_max_pending` explanations are accepted at once (running or
waiting for a worker), and at most half of them (at least one) from one key, so that no client can take every
place; past either the answer is 429 with Retry-After at once, never a queue, and /score is not touched. An
explanation not done within `explain_timeout_seconds` is a 504.

While a split challenger answers a share of the requests (traffic.py), a decision the champion did not make is
asked of the challenger, with the client's own key: the model that decided it explains it, at the same URL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import multiprocessing
import os
import re
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fin_behavior.records import ModelInfo
from fin_behavior.serving.attribution import PREDICTION, Attribution, Attributor, Unexplainable
from fin_behavior.serving.bundle import Bundle
from fin_behavior.serving.config import ServiceSettings
from fin_behavior.serving.decision_log import NotFound, find_decision
from fin_behavior.serving.raw_records import RecordSchema, raw_refusal
from fin_behavior.serving.request_ids import request_id_for
from fin_behavior.serving.submitted_attribution import NO_SHAP, SubmittedAttributor
from fin_behavior.serving.traffic import ChallengerTraffic
from fin_behavior.serving.validation import InputError, decode

log = logging.getLogger("fin_behavior.serving.explain")
DEFAULT_TOP = 4
RETRY_AFTER = {"Retry-After": "1"}
WORKER_NICENESS = 10
OOM_SCORE_ADJ = 1000  # the first the kernel ends when memory runs out


class Explanations:
    """The routes and the bounded worker of one scoring service. `authorized(scope)` is the service's key check
    (the asking client's name in the log, "" for the platform's probe key, None without a valid key),
    `read_body(scope, receive)` its body reader (the size bound, the deadline, the cap on bodies still arriving);
    `challenger` the service's experiment, whose split challenger explains the decisions it made."""

    def __init__(
        self,
        settings: ServiceSettings,
        bundle: Bundle | None,
        authorized: Any,
        flush_log: Any,
        read_body: Any,
        challenger: ChallengerTraffic | None = None,
    ):
        self.settings, self.bundle, self.authorized, self.flush_log = settings, bundle, authorized, flush_log
        self.read_body, self.challenger = read_body, challenger
        self.pending = 0
        self.pending_of: collections.Counter[str] = collections.Counter()  # accepted, by the asking client's name
        self.pool: ProcessPoolExecutor | None = None
        self.refusal = _refusal(settings, bundle)

    def routes(self) -> list[Route]:
        return [
            Route("/explain", self.explain_posted, methods=["POST"]),
            Route("/explain/{request_id}", self.explain_logged, methods=["GET"]),
        ]

    # The routes --------------------------------------------------------------------------------------------

    async def explain_logged(self, request: Request) -> Response:
        asked = request.path_params["request_id"]
        # every answer names the decision asked about; a path that cannot be an id gets a fresh one, as /score does
        request_id, not_an_id = request_id_for(asked)
        client = self.authorized(request.scope)  # a decision is found only among this client's
        if refused := self._refused(client, request_id):
            return refused
        if not_an_id is not None:
            return _error(404, f"{asked[:80]!r} is not a request id this service gives or takes", request_id)
        try:
            top = _top(request)
            if self.flush_log is not None:
                self.flush_log()  # the last half second's lines are still in the service's buffer
            answer = await self._run(client, _explain_logged, self.settings.prediction_log, request_id, top, client)
        except InputError as exc:
            if exc.status == 404 and (theirs := await self._challengers(request, request_id, client)) is not None:
                return theirs
            return _refusal_of(exc, request_id)
        return JSONResponse(answer, headers={"X-Request-ID": request_id})

    async def _challengers(self, request: Request, request_id: str, client: str) -> Response | None:
        """A split challenger's explanation of a decision it made (the champion has none under this id for this
        client), asked in one of the client's explanation places; None (the champion's 404 stands) when no split
        runs, or the challenger has no such decision, cannot explain or does not answer: an id the champion has not
        got is never a 5xx. Its refusals for load (429) and time (504) are passed on: it has the decision."""
        if self.challenger is None or not self.challenger.splitting:  # nothing to ask: no place taken for it
            return None
        scope = request.scope
        wait = self.settings.explain_timeout_seconds + 5  # the challenger's own 504 comes first
        try:
            with self._place(client):
                relayed = await self.challenger.explanation(request_id, scope["query_string"], scope["headers"], wait)
        except InputError as busy:  # no place left for this client (429)
            return _refusal_of(busy, request_id)
        if relayed is None or relayed.status not in (200, 429, 504):
            return None
        retry = RETRY_AFTER if relayed.status == 429 else {}
        answered = {"X-Request-ID": request_id, "X-Model-Version": relayed.version} | retry
        return Response(relayed.body, relayed.status, headers=answered, media_type="application/json")

    async def explain_posted(self, request: Request) -> Response:
        request_id, bad_id = request_id_for(request.headers.get("x-request-id"))
        client = self.authorized(request.scope)
        if refused := self._refused(client, request_id):
            return refused
        assert self.bundle is not None
        try:
            if bad_id is not None:
                raise InputError(400, bad_id)
            top = _top(request)
            parsed = self.bundle.schema.parse(decode(await self.read_body(request.scope, request.receive)), self._rows)
            # the platform's probabilities as /score answers them; a submitted model predicts in the worker
            probabilities = None if self.bundle.runtime == "pyfunc" else self.bundle.predict(parsed.columns)[1]
            explained = await self._run(client, _explain_posted, parsed.columns, probabilities, top)
        except InputError as exc:
            return _refusal_of(exc, request_id)
        body = {"request_id": request_id, "model_version": self.settings.model_version, **explained}
        return JSONResponse(body, headers={"X-Request-ID": request_id})

    @property
    def _rows(self) -> int:
        return min(self.settings.max_rows, self.settings.explain_max_rows)

    def _refused(self, client: str | None, request_id: str) -> Response | None:
        """Why `client` (the key check's answer: None without a valid key) is not explained here, if it is not."""
        if client is None:
            return _error(
                401, "missing or invalid API key: send it as X-API-Key or Authorization: Bearer <key>", request_id
            )
        if self.bundle is None:
            return _error(
                503, "model not loaded: this service is not ready (GET /ready says why)", request_id, RETRY_AFTER
            )
        if self.refusal:
            return _error(501, self.refusal, request_id)
        return None

    # The bounded worker ------------------------------------------------------------------------------------

    async def _run(self, client: str, work: Any, *args: Any) -> Any:
        """`work(*args)` in a worker process for `client`; InputError 429 when `explain_max_pending` are already
        accepted, or half of them (at least one) for this client."""
        with self._place(client):
            outcome = await self._in_worker(work, *args)
        if isinstance(outcome, tuple):  # (status, message): the worker's refusal
            raise InputError(*outcome)
        return outcome

    @contextlib.contextmanager
    def _place(self, client: str):
        """One of the `explain_max_pending` places, held by `client` meanwhile; InputError 429 when they are all
        taken, or half of them (at least one) by this client."""
        if self.pending >= self.settings.explain_max_pending:
            raise InputError(
                429, f"{self.pending} explanations are being computed; retry shortly (scoring is unaffected)"
            )
        share = max(1, self.settings.explain_max_pending // 2)
        if self.pending_of[client] >= share:
            raise InputError(
                429,
                f"this key has {share} explanations being computed, as many as one key may at once (half of "
                "explain_max_pending, so that other clients keep a place); retry when one is answered",
            )
        self.pending += 1
        self.pending_of[client] += 1
        try:
            yield
        finally:
            self.pending -= 1
            self.pending_of[client] -= 1
            if not self.pending_of[client]:
                del self.pending_of[client]

    async def _in_worker(self, work: Any, *args: Any) -> Any:
        """`work(*args)`'s outcome in a worker process (started on the first); InputError 504 past
        `explain_timeout_seconds`, 503 when the worker died."""
        try:
            if self.pool is None:
                context = multiprocessing.get_context("spawn")  # never fork the event loop's threads
                self.pool = ProcessPoolExecutor(
                    self.settings.explain_workers,
                    context,
                    initializer=_start_worker,
                    initargs=(self.settings.bundle_dir, self.settings.model_version, self.settings.max_rows),
                )
            future = self.pool.submit(work, *args)
            async with asyncio.timeout(self.settings.explain_timeout_seconds):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            raise InputError(504, f"the explanation took over {self.settings.explain_timeout_seconds:g} s") from None
        except BrokenProcessPool:
            self.pool = None  # started again on the next request
            log.error("the explanation worker died; a new one starts with the next explanation")
            raise InputError(503, "the explanation worker stopped; retry shortly") from None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


def _refusal(settings: ServiceSettings, bundle: Bundle | None) -> str:
    """Why this service cannot explain at all ("" when it can): answered as a 501."""
    if bundle is None:
        return ""  # not ready: the key check and the readiness answer say so
    if settings.explain_workers < 1:
        return "explanations are turned off on this service (explain_workers is 0)"
    if find_spec("shap") is None:  # looked up, not imported: shap loads only in the worker
        if bundle.runtime == "pyfunc":
            return NO_SHAP
        return (
            "this serving environment has no shap, which exact explanations need: add it to the environment's "
            "packages (fin_behavior/environments/serving_environments.toml)"
        )
    return ""


def _error(status: int, message: str, request_id: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A refusal that names its request, like every answer of the service (request_ids.py)."""
    body = {"error": message, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers={"X-Request-ID": request_id} | (headers or {}))


def _refusal_of(exc: InputError, request_id: str) -> JSONResponse:
    return _error(exc.status, exc.message, request_id, RETRY_AFTER if exc.status in (429, 503) else None)


def _top(request: Request) -> int:
    given = request.query_params.get("top", str(DEFAULT_TOP))
    if not re.fullmatch(r"[0-9]{1,3}", given) or not 1 <= int(given) <= 100:  # ASCII digits ("²".isdigit())
        raise InputError(422, f"top must be a whole number from 1 to 100 (the reasons per row), not {given[:20]!r}")
    return int(given)


# The explanation rows ----------------------------------------------------------------------------------------


def _rows(columns: dict[str, list], attributions: list[Attribution], top: int, scale: str) -> list[dict]:
    rows = []
    for i, attribution in enumerate(attributions):
        contributions = attribution.contributions
        ranked = sorted(contributions, key=lambda name: abs(contributions[name]), reverse=True)[:top]
        reasons = [_reason(name, columns[name][i], contributions[name], scale) for name in ranked]
        rows.append(
            {
                **attribution.answer,
                "base_value": attribution.base_value,
                "contributions": contributions,
                "reasons": reasons,
            }
        )
    return rows


def _reason(column: str, value: Any, contribution: float, scale: str) -> dict[str, Any]:
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    moved = "raised" if contribution > 0 else "lowered" if contribution < 0 else "did not move"
    by = f" by {abs(contribution):.2g}" if contribution else ""
    return {
        "column": column,
        "value": value if not isinstance(value, float) or math.isfinite(value) else None,  # JSON has no NaN
        "contribution": contribution,
        "text": f"{column} {shown} {moved} the {scale.replace('_', '-')}{by}",
    }


# In the worker process ---------------------------------------------------------------------------------------


class _Worker:
    """What one worker process holds: the model's attributor (or why there is none), the served version, and the
    scoring schema, so a logged request is read back exactly as it was validated."""

    def __init__(self, bundle_dir: Path, model_version: str, max_rows: int):
        self.version, self.max_rows = model_version, max_rows
        self.attributor: Attributor | SubmittedAttributor | None = None
        self.refusal, self.submitted = "", False
        try:
            info = ModelInfo.read(bundle_dir)
            self.submitted = info.runtime == "pyfunc"
            self.schema = RecordSchema(info.features, raw_refusal(info))  # as /score read it: raw records too
            self.attributor = (SubmittedAttributor if self.submitted else Attributor).load(bundle_dir)
        except Unexplainable as exc:
            self.refusal = str(exc)
        except Exception as exc:  # a submitted model's own code failed while it loaded: its fault, said as such
            log.exception("the model cannot be prepared for explanations")
            self.refusal = f"the model cannot be prepared for explanations: {type(exc).__name__}: {str(exc)[:300]}"

    def explained(
        self, columns: dict[str, list], probabilities: list[float] | None, top: int
    ) -> dict[str, Any] | tuple[int, str]:
        """{"scale", "rows"} for the rows of `columns`; the platform's rows with the `probabilities` /score answered,
        a submitted model's with what it answers itself."""
        if self.attributor is None:
            return 501, self.refusal
        try:
            attributions = self.attributor.explain(columns)
        except Unexplainable as exc:
            return 501, str(exc)
        except Exception:  # a submitted model's predict failed on these rows: said as /score says it
            log.exception("explaining failed")
            return 500, "internal error while explaining; see the service log"
        if probabilities is not None:
            answered = zip(attributions, probabilities, strict=True)
            attributions = [replace(attribution, answer={"probability": p}) for attribution, p in answered]
        scale = self.attributor.scale
        return {"scale": scale, "rows": _rows(columns, attributions, top, scale)}


_worker: _Worker | None = None
PARENT_CHECK_SECONDS = 1.0


def _exit_with_parent(parent: int) -> None:
    """The worker ends when the scoring process does, however it ended (stopped, killed, crashed). Why a watch:
    a spawned pool worker holds both ends of its own task queue, so it never sees the service go, and would
    live on holding the model and shap, one per color ever started."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _start_worker(bundle_dir: Path, model_version: str, max_rows: int) -> None:
    global _worker
    # Where the worker shares a core with the scoring process (a pinned container, a busy machine), scoring
    # goes first: an explanation waits a little longer, a /score does not.
    os.nice(WORKER_NICENESS)
    # Where memory runs out (a submitted model's color is bounded as a whole, and the worker holds a second copy of
    # the model beside shap), the kernel ends the worker, which starts again, rather than the scoring process.
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text(str(OOM_SCORE_ADJ))
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True, name="parent-watch").start()
    _worker = _Worker(bundle_dir, model_version, max_rows)


def _explain_posted(
    columns: dict[str, list], probabilities: list[float] | None, top: int
) -> dict[str, Any] | tuple[int, str]:
    """POST /explain's rows, explained in the worker."""
    assert _worker is not None
    return _worker.explained(columns, probabilities, top)


def _explain_logged(log: Path | None, request_id: str, top: int, client: str) -> dict[str, Any] | tuple[int, str]:
    """GET /explain/{request_id}'s answer: found among `client`'s decisions, read back and explained in the worker."""
    assert _worker is not None
    if _worker.attributor is None:
        return 501, _worker.refusal
    try:
        decision = find_decision(log, request_id, _worker.version, client)
        parsed = _worker.schema.parse(decision.request, _worker.max_rows)
    except NotFound as exc:
        return 404, str(exc)
    except InputError as exc:
        return 404, f"request {request_id!r} is in the log but cannot be read back ({exc.message})"
    if len(decision.predictions) != parsed.rows:
        return 404, f"request {request_id!r}'s logged answer does not match its records; it cannot be explained"
    # the platform's rows carry the logged probabilities; a submitted model answers again, as it answered then
    explained = _worker.explained(parsed.columns, None if _worker.submitted else decision.probabilities, top)
    if isinstance(explained, tuple):
        return explained
    if _worker.submitted and [row[PREDICTION] for row in explained["rows"]] != decision.predictions:
        return 404, f"request {request_id!r}'s logged answer is not what the model answers now; it cannot be explained"
    return {"request_id": request_id, "model_version": _worker.version, **explained}
