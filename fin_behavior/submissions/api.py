"""The second seed's `/mlops/deploy`, on the platform: submit a training script, get a URL.

    fin-behavior submissions serve            # http://127.0.0.1:8090 (SUBMISSION_API_HOST / _PORT)

POST /mlops/deploy takes `{"script_content": <text or base64>, "model_name": ..., "requirements": [...],
"timeout": <seconds>}` and answers 202 at once with the submission's id and where to ask about it; the work
runs in the background, at most SUBMISSION_WORKERS submissions at a time (the others wait, queued), each as a
Dagster run; past SUBMISSION_MAX_PENDING submissions queued or running, or SUBMISSION_MAX_PENDING_PER_KEY
from the same API key, a new one is a 429 with Retry-After (the queue, its disk and everyone's wait stay
bounded, and no key holder fills the queue for the others). GET /mlops/submissions/{id} answers where it stands
(queued, preparing, training, validating, verifying, deploying, deployed, failed), its timings, MLflow run,
model version, URL, Dagster run and error object; GET /mlops/help what a script must do. Keys as the scoring
service's: X-API-Key or Bearer, any of the keys in `<submissions dir>/keys.json` (made with one at the first
start, mode 0600; an operator adds one per team, read at each request). A submission is seen only with the key
it came with, or a reviewer's. With the approval policy on, a pending version is approved by a key of the file's
"approver_keys" (the bank's reviewers; never the key that submitted it), and rejected by one of those or withdrawn
by its own key.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fin_behavior.deploy.local import ensure_keys
from fin_behavior.governance.approval import ApprovalError, decide
from fin_behavior.serving.config import read_key_lists
from fin_behavior.serving.validation import InputError, decode
from fin_behavior.settings import Settings
from fin_behavior.submissions import errors
from fin_behavior.submissions.intake import accept, key_fingerprint
from fin_behavior.submissions.record import Submission
from fin_behavior.submissions.sandbox import weaker_bounds

EXAMPLE = """import mlflow
import mlflow.sklearn
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

X, y = make_classification(n_samples=1000, n_features=10, random_state=42)
with mlflow.start_run():
    model = RandomForestClassifier(n_estimators=100, random_state=42).fit(X, y)
    mlflow.log_metric("accuracy", model.score(X, y))
    mlflow.sklearn.log_model(model, name="model", input_example=X[:5])
"""


def _error(error: errors.SubmissionError, status: int | None = None) -> JSONResponse:
    return JSONResponse(error.to_dict(), status_code=status or error.status)


def _unknown(submission_id: str) -> JSONResponse:
    """Not there, or not the asking key's to see: the same answer."""
    return _error(errors.SubmissionError("Not Found", f"no submission {submission_id[:40]!r}"), 404)


_BODY_SECONDS = 10.0  # a body must arrive within this (as the scoring service's body_timeout_seconds)
_BODIES_AT_ONCE = 16  # bodies being received at once; one more is a 503: no client holds the API's memory
_CONNECTIONS = 256  # uvicorn's limit_concurrency: past it, new requests are a 503 at once


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The body, refused with a 413 as soon as it is known to pass `limit`: from its declared length before a byte
    is read, else once that many bytes have arrived (never read whole first); a 408 when it does not arrive
    within _BODY_SECONDS."""
    too_large = errors.SubmissionError("Invalid Request", f"the request is over {limit:,} bytes", status=413)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async with asyncio.timeout(_BODY_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise errors.SubmissionError(
            "Invalid Request", f"the body did not arrive within {_BODY_SECONDS:g} s; send it at once", status=408
        ) from None
    return b"".join(chunks)


TEAMS, APPROVERS = "keys", "approver_keys"  # the keys file's lists: a team's key submits, a reviewer's decides


@dataclass(frozen=True)
class Caller:
    """A request's key: its fingerprint (what submissions and the history name) and the keys file's lists that
    hold it."""

    id: str
    lists: frozenset[str]


def _keyed(*lists: str):
    """The handler, called with the request's Caller when its key is in one of the keys file's `lists`; a 401 for
    a key the file does not hold, a 403 for one in another list."""

    def wrap(handler: Callable[[SubmissionService, Request, Caller], Awaitable[Response]]):
        @functools.wraps(handler)
        async def checked(self: SubmissionService, request: Request) -> Response:
            try:
                caller = self._caller(request)
            except errors.SubmissionError as exc:
                return _error(exc)
            if caller is None:
                return self._refused()
            if not caller.lists & set(lists):  # a reviewer's key asking to submit
                message = f"this key is a reviewer's (the keys file's \"{APPROVERS}\"): it approves and rejects"
                help = f"Submit with a team's key (the keys file's \"{TEAMS}\")."
                return _error(errors.SubmissionError("Forbidden", message, help=help), 403)
            return await handler(self, request, caller)

        return checked

    return wrap


class SubmissionService:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.root = settings.submissions_root
        self.root.mkdir(parents=True, exist_ok=True)
        self.keys_file = self.root / "keys.json"
        ensure_keys(self.keys_file)
        self.slots: asyncio.Semaphore | None = None  # made on the server's loop
        self.running: dict[asyncio.Task, str] = {}  # queued or running -> the client it came from
        self.receiving = 0  # requests whose body is still arriving
        self.app = Starlette(
            routes=[
                Route("/mlops/deploy", self.deploy, methods=["POST"]),
                Route("/mlops/submissions/{submission_id}", self.status, methods=["GET"]),
                Route("/mlops/submissions/{submission_id}/approve", self.approve, methods=["POST"]),
                Route("/mlops/submissions/{submission_id}/reject", self.reject, methods=["POST"]),
                Route("/mlops/help", self.help, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_error},
            lifespan=self.lifespan,
        )

    @asynccontextmanager
    async def lifespan(self, _: Starlette):
        self.slots = asyncio.Semaphore(self.settings.submission_workers)
        for record in sorted(self.root.glob("*/submission.json")):  # queued before a restart: run them now
            submission = Submission.load(self.root, record.parent.name)
            if submission.state == "queued":
                self._start(submission)
        yield

    async def _http_error(self, _: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error = errors.SubmissionError("Not Found" if exc.status_code == 404 else "Bad Request", str(exc.detail))
        return JSONResponse(error.to_dict(), status_code=exc.status_code, headers=exc.headers)

    def _caller(self, request: Request) -> Caller | None:
        """Who the key the request offers is, None when it is none of the keys (read each time: a key added for
        a new team or reviewer works without a restart)."""
        offered = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        try:  # as the scoring service reads them
            keys = read_key_lists(self.keys_file, TEAMS, (APPROVERS,))
        except ValueError as exc:
            raise errors.SubmissionError(
                "Platform Misconfigured",
                f"the API's keys file cannot be used: {exc}",
                help="The operator must mend it; nothing was submitted.",
                status=503,
            ) from None
        found, lists = None, set()
        for kind, listed in keys.items():
            for key in map(str.encode, listed):
                if hmac.compare_digest(offered.encode("latin-1", "replace"), key):
                    found = key_fingerprint(key)
                    lists.add(kind)
        return Caller(found, frozenset(lists)) if found else None

    def _refused(self) -> JSONResponse:
        return _error(
            errors.SubmissionError(
                "Unauthorized",
                "missing or invalid API key",
                help=f"send the key from {self.keys_file} as X-API-Key or Authorization: Bearer <key>",
            ),
            401,
        )

    @_keyed(TEAMS)
    async def deploy(self, request: Request, caller: Caller) -> Response:
        client = caller.id
        limit = self.settings.submission_max_script_bytes * 2 + 65_536  # base64 and the other fields
        if self.receiving >= _BODIES_AT_ONCE:
            response = _error(errors.SubmissionError("Busy", "too many requests are sending their body", status=503))
            response.headers["Retry-After"] = "5"
            return response
        self.receiving += 1
        try:
            body = await _bounded_body(request, limit)
        except errors.SubmissionError as exc:
            return _error(exc)
        finally:
            self.receiving -= 1
        try:
            payload = decode(body)  # the scoring service's parser: deep nesting and huge numbers are a 400 too
            if not isinstance(payload, dict):
                raise InputError(400, "not a JSON object")
        except InputError as exc:
            return _error(
                errors.invalid(f"the body is not a JSON object: {exc.message}", help="See GET /mlops/help."), 400
            )
        per_key = self.settings.submission_max_pending_per_key
        if (mine := list(self.running.values()).count(client)) >= per_key:
            return self._full(
                f"this key already has {mine} queued or running (one key holds at most {per_key})",
                "Submit again once one of yours has finished (GET /mlops/submissions/{id} says when); the operator "
                "can raise FIN_BEHAVIOR_SUBMISSION_MAX_PENDING_PER_KEY, or give each team a key of its own.",
            )
        if len(self.running) >= self.settings.submission_max_pending:
            return self._full(
                f"{len(self.running)} submissions are queued or running; this platform holds at most "
                f"{self.settings.submission_max_pending}",
                "Submit again once one has finished (GET /mlops/submissions/{id} says when); the operator can "
                "raise FIN_BEHAVIOR_SUBMISSION_MAX_PENDING.",
            )
        try:
            submission = accept(
                self.settings,
                payload.get("script_content"),
                payload.get("model_name"),
                payload.get("requirements") or [],
                payload.get("timeout", payload.get("timeout_seconds")),
                client,
            )
        except errors.SubmissionError as exc:
            return _error(exc)
        self._start(submission)
        return JSONResponse(
            {
                "submission_id": submission.id,
                "status": submission.state,
                "status_url": f"/mlops/submissions/{submission.id}",
            },
            status_code=202,
        )

    def _full(self, message: str, help: str) -> JSONResponse:
        response = _error(errors.SubmissionError("Too Many Submissions", message, help=help, status=429))
        response.headers["Retry-After"] = "60"
        return response

    def _start(self, submission: Submission, *extra: str) -> None:
        task = asyncio.get_running_loop().create_task(self._run(submission.id, *extra))
        self.running[task] = submission.client
        task.add_done_callback(lambda done: self.running.pop(done, None))

    async def _run(self, submission_id: str, *extra: str) -> None:
        if self.slots is None:  # served without its lifespan (an app in process)
            self.slots = asyncio.Semaphore(self.settings.submission_workers)
        async with self.slots:
            with (self.root / submission_id / "worker.log").open("ab") as log:
                worker = ["-m", "fin_behavior.submissions.worker", submission_id, *extra]
                process = await asyncio.create_subprocess_exec(sys.executable, *worker, stdout=log, stderr=log)
                await process.wait()

    def _seen(self, submission_id: str, caller: Caller) -> Submission | None:
        """The submission, None when there is none or the caller may not see it: a team sees the ones its key
        made (another's answers as an unknown id would), a reviewer every one."""
        known = Submission.well_formed(submission_id) and (self.root / submission_id / "submission.json").is_file()
        submission = Submission.load(self.root, submission_id) if known else None
        if submission is None or (submission.client != caller.id and APPROVERS not in caller.lists):
            return None
        return submission

    @_keyed(TEAMS, APPROVERS)
    async def status(self, request: Request, caller: Caller) -> Response:
        submission_id = request.path_params["submission_id"]
        if (submission := self._seen(submission_id, caller)) is None:
            return _unknown(submission_id)
        return JSONResponse(describe(submission))

    # Four eyes: a reviewer's key ("approver_keys"), never the submitter's, approves a pending version, which is
    # then served; a reviewer rejects one, or its own key withdraws it (final: it never serves). Another team's
    # key finds nothing to decide.
    @_keyed(TEAMS, APPROVERS)
    async def approve(self, request: Request, caller: Caller) -> Response:
        return await self._decide(request, caller, approve=True)

    @_keyed(TEAMS, APPROVERS)
    async def reject(self, request: Request, caller: Caller) -> Response:
        return await self._decide(request, caller, approve=False)

    async def _decide(self, request: Request, caller: Caller, approve: bool) -> Response:
        submission_id = request.path_params["submission_id"]
        if (submission := self._seen(submission_id, caller)) is None:
            return _unknown(submission_id)
        if approve and APPROVERS not in caller.lists:
            return _error(
                errors.SubmissionError(
                    "Forbidden",
                    "four eyes: a pending version is approved by a reviewer's key, never by the key that submitted it",
                    help=f"The operator lists reviewers' keys under \"{APPROVERS}\" in the API's keys file; this key "
                    "may withdraw its submission with /reject.",
                ),
                403,
            )
        if submission.state != "pending_approval":
            return _error(
                errors.SubmissionError(
                    "Conflict",
                    f"submission {submission_id} is {submission.state}, not pending approval",
                    help="Only a registered version the policy approval_required holds back is approved or rejected.",
                ),
                409,
            )
        try:
            payload = decode(await _bounded_body(request, 8_192))
            reason = payload.get("reason") if isinstance(payload, dict) else None
            if not isinstance(reason, str) or not reason.strip():
                raise InputError(400, 'send {"reason": "why"}: the reason is kept in the history')
        except errors.SubmissionError as exc:
            return _error(exc)
        except InputError as exc:
            return _error(errors.invalid(exc.message), 400)
        try:
            record = await asyncio.to_thread(self._record_decision, submission, approve, caller.id, reason)
        except ApprovalError as exc:
            title = {403: "Forbidden", 404: "Not Found", 400: "Invalid Request"}.get(exc.status, "Conflict")
            return _error(errors.SubmissionError(title, str(exc)), exc.status)
        if not approve:
            submission.enter(self.root, "rejected")
            return JSONResponse({"submission_id": submission.id, "status": "rejected", "record": record["seq"]})
        submission.enter(self.root, "deploying")
        self._start(submission, "--serve", f"approval #{record['seq']}")
        return JSONResponse(
            {
                "submission_id": submission.id,
                "status": "approved",
                "record": record["seq"],
                "status_url": f"/mlops/submissions/{submission.id}",
            },
            status_code=202,
        )

    def _record_decision(self, submission: Submission, approve: bool, client: str, reason: str) -> dict:
        from mlflow import MlflowClient

        from fin_behavior.governance import audit

        registry = MlflowClient(tracking_uri=self.settings.tracking_uri)
        history = audit.History.of(self.settings)
        who = f"key {client}"
        return decide(registry, history, submission.name, submission.model_version, approve, who, reason, client)

    async def help(self, _: Request) -> Response:
        s = self.settings
        return JSONResponse(
            {
                "request": {
                    "script_content": "the training script, as text or base64",
                    "model_name": "1-63 letters, digits, '-' or '_', starting with a letter",
                    "requirements": "package specifiers, e.g. ['xgboost', 'scikit-learn>=1.5']",
                    "timeout": f"seconds the script may run (default {s.submission_default_timeout_seconds:g}, "
                    f"at most {s.submission_max_timeout_seconds:g})",
                },
                "contract": errors.SCRIPT_CONTRACT,
                "limits": {
                    "script_bytes": s.submission_max_script_bytes,
                    "memory_mb": s.submission_memory_limit_mb,
                    "processes": s.submission_max_processes,
                    "cpus": s.submission_cpus,
                    "disk_mb": s.submission_disk_limit_mb,
                    "model_mb": s.submission_max_model_mb,
                    "python": s.submission_python,
                    "network": "none while the script runs",
                    "bounds": bounds_status(s),
                },
                "example": EXAMPLE,
            }
        )


def bounds_status(settings: Settings) -> str:
    """How this machine confines and bounds submitted code, as the help and the CLI say it."""
    try:
        weaker = weaker_bounds(settings)
    except errors.SubmissionError as exc:
        return f"submissions are refused: {exc.message}"
    return weaker or "kernel: bubblewrap sandbox; memory, processes and CPU per cgroup; disk per tmpfs"


def describe(submission: Submission) -> dict[str, Any]:
    """The record, with the seed's field names beside the platform's."""
    return submission.public() | {
        "status": submission.state,
        "inference_url": f"{submission.url}/score" if submission.url else None,
        "deployment_time_seconds": submission.deployment_seconds or None,
    }


def serve(settings: Settings) -> None:
    import uvicorn

    service = SubmissionService(settings)
    url = f"http://{settings.submission_api_host}:{settings.submission_api_port}"
    print(f"submissions API on {url}; its key is in {service.keys_file}; {bounds_status(settings)}", flush=True)
    uvicorn.run(
        service.app,
        host=settings.submission_api_host,
        port=settings.submission_api_port,
        log_level="warning",
        limit_concurrency=_CONNECTIONS,
        timeout_keep_alive=5,
    )
