"""A submission's request, checked before anything is built or run: the script (base64 or plain text, within
the size limit, compiling), the model name, requirements that are package specifiers and nothing else (no
URL, path or pip option can reach the installer), the timeout, and that the name is free or the key's own (a
name belongs to the key that first submitted it). Accepted, it is written to disk as queued."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets

from packaging.requirements import InvalidRequirement, Requirement

from fin_behavior.governance import audit
from fin_behavior.settings import Settings
from fin_behavior.submissions import errors
from fin_behavior.submissions.record import ID_LENGTH, SCRIPT_FILE, Submission
from fin_behavior.submissions.sandbox import claim, look_alike

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")
MAX_REQUIREMENTS = 50


def key_fingerprint(key: bytes) -> str:
    """Who a submission came from, without the key: the API's key, or the command line's SUBMISSION_KEY."""
    return hashlib.sha256(key).hexdigest()[:12]


def decode_script(content: str) -> str:
    """The seed's API took base64 and fell back to plain text: text that is valid base64 of UTF-8 is decoded."""
    try:
        decoded = base64.b64decode(content, validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return content
    return decoded if "\x00" not in decoded else content


def check_requirements(requirements: list[str]) -> list[str]:
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise errors.invalid("requirements must be a list of strings such as 'scikit-learn>=1.5'")
    if len(requirements) > MAX_REQUIREMENTS:
        raise errors.invalid(f"{len(requirements)} requirements; at most {MAX_REQUIREMENTS}")
    checked = []
    for text in requirements:
        problem = None
        stripped = text.strip()
        if not stripped or stripped.startswith("-") or len(stripped) > 200:
            problem = "an option or an empty line, not a package"
        else:
            try:
                requirement = Requirement(stripped)
                if requirement.url:
                    problem = "a URL or a path, not a package from the index"
            except InvalidRequirement as exc:
                problem = f"not a package specifier ({exc})"
        if problem:
            raise errors.invalid(
                f"requirement {text[:80]!r} is {problem}",
                help="Requirements are package specifiers only, e.g. 'xgboost', 'scikit-learn>=1.5,<1.10', "
                "'pandas==2.3.3'.",
            )
        checked.append(stripped)
    return checked


def accept(
    settings: Settings,
    script: object,  # untrusted (a request body's fields): checked below
    name: object,
    requirements: list[str],
    timeout_seconds: float | None = None,
    client: str = "",
) -> Submission:
    """Check the request and store it as queued; SubmissionError (with its HTTP status) when it cannot be.
    `client`: the fingerprint of the API key it came with ("" from the command line)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):  # fullmatch: "$" would let a final newline in
        raise errors.invalid(
            f"model name {str(name)[:80]!r} is not usable: 1-63 letters, digits, '-' or '_', starting with a letter"
        )
    if look_alike(name) == look_alike(settings.registered_model_name):
        raise errors.invalid(f"{name!r} is the platform's own model; choose another name")
    if not isinstance(script, str) or not script.strip():
        raise errors.invalid("the script is empty: send its text (or base64) as script_content")
    text = decode_script(script)
    if len(text.encode()) > settings.submission_max_script_bytes:
        raise errors.SubmissionError(
            "Invalid Request",
            f"the script is {len(text.encode()):,} bytes; at most {settings.submission_max_script_bytes:,}",
            help="Keep data out of the script: load it from a file or generate it.",
            status=413,
        )
    try:
        compile(text, SCRIPT_FILE, "exec")
    except SyntaxError as exc:
        raise errors.syntax(exc) from None
    timeout = settings.submission_default_timeout_seconds if timeout_seconds is None else timeout_seconds
    if not isinstance(timeout, int | float) or not 0 < timeout <= settings.submission_max_timeout_seconds:
        raise errors.invalid(
            f"timeout {timeout!r} s is not between 0 and {settings.submission_max_timeout_seconds:g} s "
            "(SUBMISSION_MAX_TIMEOUT_SECONDS)"
        )
    requirements = check_requirements(requirements)
    claim(settings.submissions_root, name, client)  # a name belongs to the key that first submitted it
    submission = Submission(secrets.token_hex(ID_LENGTH // 2), name, requirements, float(timeout), client=client)
    directory = submission.directory(settings.submissions_root)
    directory.mkdir(parents=True)
    (directory / SCRIPT_FILE).write_text(text)
    submission.save(settings.submissions_root)
    who = submission.author(audit.actor(settings.actor))
    audit.History.of(settings).append(audit.SUBMISSION_ACCEPTED, name, None, who, submission=submission.id)
    return submission
