"""Request ids: every scoring answer names its decision, so the decision can be found again (the prediction log,
`GET /explain/{request_id}`, outcomes joined by id). A client's own `X-Request-ID` is used as given when it keeps
the rule below; otherwise the service makes one.

Why a client's id that breaks the rule is refused (400) rather than replaced: a client that sends its own id means
to find the decision by it later; answering under another id would break that join without a word. The rule keeps
an id safe to write into a log line, a header and a URL path without escaping. Standard library only (it runs in
the scoring service and in Azure's score.py)."""

from __future__ import annotations

import os
import re

HEADER = "X-Request-ID"
RULE = "1 to 64 characters, each a letter, digit, '.', '_' or '-'"
_VALID = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_SHOWN = 80  # characters of a refused id echoed back


def new_request_id() -> str:
    """A fresh id: 128 random bits as 32 hex digits (no clock, no counter: ids from several colors never collide)."""
    return os.urandom(16).hex()


def is_valid(request_id: str) -> bool:
    return _VALID.match(request_id) is not None


def refusal(offered: str) -> str:
    """The 400 message for an id that breaks the rule."""
    return (
        f"{HEADER} {offered[:_SHOWN]!r} is not a valid request id: it must be {RULE}; "
        "send one that is, or none and the service makes one"
    )


def subject_refusal(offered: str) -> str:
    """The 400 message for an X-Subject-ID (the key a challenger split is sticky by, traffic.py) that breaks the
    same rule."""
    return f"X-Subject-ID {offered[:_SHOWN]!r} is not a valid subject id: it must be {RULE}; send one that is, or none"


def request_id_for(offered: str | None) -> tuple[str, str | None]:
    """(the request's id, None) for a valid or missing client id; (a fresh id, why the offered one is refused)
    otherwise: the refusal still carries an id of its own, like every answer."""
    if not offered:
        return new_request_id(), None
    if is_valid(offered):
        return offered, None
    return new_request_id(), refusal(offered)
