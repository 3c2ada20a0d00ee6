"""web: points from the code host. GitHub's webhook deliveries, in GitHub's own format:
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body under the project's webhook
secret>``, the event in ``X-GitHub-Event``, the delivery's id in ``X-GitHub-Delivery``.

A delivery is checked in this order: its size (413 before any signature work), its signature
(401; a project that does not exist answers exactly like a bad signature, so the endpoint tells
no one which projects exist), its delivery id (a redelivery gets the first answer), then its
event: ``push`` credits each commit to the member whose handle is the commit author's GitHub
username, ``issues`` ``closed`` credits the closer; ``ping`` is 200; everything else is 202
and does nothing. Credits go through the ledger's own idempotency (the commit id, or
``issue-<number>``, is the contribution's ref), so a commit pushed again on another branch
earns nothing twice.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from typing import Any
from urllib.parse import parse_qs

import psycopg2.extras
from flask import Blueprint, request

from .. import validation as v
from ..db import single
from ..errors import ApiError
from ..http import UpstreamError
from .web import credit, is_member, registry

bp = Blueprint("github", __name__)

# GitHub caps a payload at 25 MB; a push lists up to 5000 paths per commit and file state. The
# API's 64 KiB would refuse ordinary pushes, this takes any push of a sane size.
WEBHOOK_MAX_BYTES = 1024 * 1024
_SIGNATURE_RE = re.compile(r"sha256=[0-9a-f]{64}")
_DELIVERY_RE = re.compile(r"[A-Za-z0-9-]{1,100}")
_EVENT_RE = re.compile(r"[a-z_]{1,64}")
# SHA-1 object ids, and SHA-256 ones for repositories that use them
_COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# The key of the HMAC computed for a project without a secret: the same work and the same
# answer as a bad signature.
_DUMMY_SECRET = secrets.token_hex(32)


def _bad_signature() -> ApiError:
    return ApiError(
        401, "invalid_signature", "X-Hub-Signature-256 is missing or does not match the body"
    )


def _bad_payload(why: str) -> ApiError:
    return ApiError(400, "invalid_payload", why)


def _raw_body() -> bytes:
    """The body as sent (the signature covers these bytes); 413 past the limit, judged by
    Content-Length before reading, and while reading a body sent without one."""
    too_large = ApiError(
        413, "payload_too_large", f"a delivery is at most {WEBHOOK_MAX_BYTES} bytes"
    )
    if (request.content_length or 0) > WEBHOOK_MAX_BYTES:
        raise too_large
    # Werkzeug stops reading a body without Content-Length at the maximum, silently: one byte
    # more than the limit tells a body that is too large from one that just fits.
    request.max_content_length = WEBHOOK_MAX_BYTES + 1
    body = request.get_data(cache=True)
    if len(body) > WEBHOOK_MAX_BYTES:
        raise too_large
    return body


def _webhook_secret(project: str) -> str | None:
    """The project's webhook secret from registry; None for no such project (or none with a
    secret yet: one created before tokens, until an operator issues its credentials)."""
    if not v.valid_project(project):
        return None
    try:
        reply = registry().get(f"/internal/v1/projects/{project}/webhook-secret", retries=1)
    except UpstreamError as exc:
        unreachable = "the registry service is not reachable"
        raise ApiError(503, "registry_unavailable", unreachable) from exc
    if reply.status == 200 and isinstance(reply.body.get("secret"), str):
        return reply.body["secret"]
    if reply.status == 404:
        return None
    raise ApiError(503, "registry_unavailable", f"the registry answered {reply.status}")


def _signed(body: bytes, secret: str, header: str | None) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    given = (header or "").strip()
    # Compared in constant time, a malformed header included (bytes: a header may hold
    # anything Latin-1).
    matches = hmac.compare_digest(expected.encode(), given.encode("latin-1", "replace"))
    return matches and _SIGNATURE_RE.fullmatch(given) is not None


def _delivery_headers() -> tuple[str, str]:
    event = request.headers.get("X-GitHub-Event", "")
    delivery = request.headers.get("X-GitHub-Delivery", "")
    if not _EVENT_RE.fullmatch(event):
        raise ApiError(400, "invalid_header", "X-GitHub-Event must name a GitHub event")
    if not _DELIVERY_RE.fullmatch(delivery):
        raise ApiError(400, "invalid_header", "X-GitHub-Delivery must be GitHub's delivery GUID")
    return event, delivery


def _payload(body: bytes) -> dict[str, Any]:
    """The JSON object of a delivery, sent as application/json or, GitHub's other content
    type, as the ``payload`` field of a form."""
    text = body.decode("utf-8", "replace")
    if request.mimetype == "application/x-www-form-urlencoded":
        text = (parse_qs(text).get("payload") or [""])[0]
    try:
        payload = json.loads(text)
    except ValueError:
        raise _bad_payload("the delivery's payload is not valid JSON") from None
    if not isinstance(payload, dict):
        raise _bad_payload("the delivery's payload must be a JSON object")
    return payload


# --- deliveries already answered ----------------------------------------------------------------


def _answered(delivery: str, project: str) -> dict | None:
    with single() as cur:
        cur.execute(
            "SELECT project, response FROM webhook_deliveries WHERE delivery_id = %s", (delivery,)
        )
        row = cur.fetchone()
    if row is None:
        return None
    if row[0] != project:
        raise ApiError(409, "delivery_conflict", "this delivery id was used for another project")
    return row[1]


def _remember(delivery: str, project: str, event: str, answer: dict) -> dict:
    """Store the answer; when a concurrent copy of this delivery stored one first, that one
    is the answer (both credited the same refs, the ledger counted each once)."""
    with single() as cur:
        cur.execute(
            "INSERT INTO webhook_deliveries (delivery_id, project, event, response) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (delivery_id) DO NOTHING RETURNING true",
            (delivery, project, event, psycopg2.extras.Json(answer)),
        )
        stored = cur.fetchone() is not None
    return answer if stored else (_answered(delivery, project) or answer)


# --- events ---------------------------------------------------------------------------------------


class _Outcome:
    """What a delivery credited and skipped, in the order of its payload."""

    def __init__(self) -> None:
        self.credited: list[dict] = []
        self.skipped: list[dict] = []

    def award(self, project: str, kind: str, ref: str, handle: str | None, no_handle: str):
        if handle is None:
            self.skipped.append({"ref": ref, "handle": None, "reason": no_handle})
            return
        if not (v.valid_handle(handle) and is_member(project, handle)):
            self.skipped.append({"ref": ref, "handle": handle, "reason": "not_a_member"})
            return
        outcome, row = credit(handle, project, kind, ref)
        if outcome == "credited":
            self.credited.append(
                {"handle": handle, "ref": ref, "points": row[1], "contribution_id": row[0]}
            )
        else:
            reason = "already_credited" if outcome == "replayed" else "credited_to_another_user"
            self.skipped.append({"ref": ref, "handle": handle, "reason": reason})


def _commits(payload: dict) -> list[tuple[str, str | None]]:
    """(commit id, author's GitHub username or None) of each commit, all checked first: a
    malformed payload credits nothing."""
    commits = payload.get("commits")
    if not isinstance(commits, list):
        raise _bad_payload("push: commits must be a list")
    found = []
    for number, commit in enumerate(commits, start=1):
        if not isinstance(commit, dict) or not isinstance(commit.get("id"), str):
            raise _bad_payload(f"push: commit {number} has no id")
        if not _COMMIT_RE.fullmatch(commit["id"]):
            raise _bad_payload(f"push: commit {number}'s id is not a commit id")
        author = commit.get("author")
        if author is not None and not isinstance(author, dict):
            raise _bad_payload(f"push: commit {number}'s author must be an object")
        username = (author or {}).get("username")
        if username is not None and not isinstance(username, str):
            raise _bad_payload(f"push: commit {number}'s author.username must be a string")
        found.append((commit["id"], username or None))
    return found


def _push(project: str, payload: dict) -> tuple[_Outcome, int]:
    outcome = _Outcome()
    for commit_id, username in _commits(payload):
        outcome.award(project, "commit", commit_id, username, "author_has_no_github_account")
    return outcome, 200


def _issues(project: str, payload: dict) -> tuple[_Outcome, int]:
    action = payload.get("action")
    if not isinstance(action, str):
        raise _bad_payload("issues: action must be a string")
    if action != "closed":
        return _Outcome(), 202
    issue, sender = payload.get("issue"), payload.get("sender")
    number = issue.get("number") if isinstance(issue, dict) else None
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise _bad_payload("issues: issue.number must be a positive integer")
    login = sender.get("login") if isinstance(sender, dict) else None
    if not isinstance(login, str) or not login:
        raise _bad_payload("issues: sender.login must be a string")
    outcome = _Outcome()
    outcome.award(project, "issue", f"issue-{number}", login, "no_sender")
    return outcome, 200


_EVENTS = {"push": _push, "issues": _issues}


@bp.post("/api/v1/webhooks/github/<project>")
def github_delivery(project: str):
    body = _raw_body()
    secret = _webhook_secret(project)
    signed = _signed(body, secret or _DUMMY_SECRET, request.headers.get("X-Hub-Signature-256"))
    if secret is None or not signed:
        raise _bad_signature()
    event, delivery = _delivery_headers()
    stored = _answered(delivery, project)
    if stored is not None:
        return stored, 200
    answer: dict[str, Any] = {"delivery": delivery, "event": event, "project": project}
    handler = _EVENTS.get(event)
    if handler is None:
        return {**answer, "credited": [], "skipped": []}, 200 if event == "ping" else 202
    outcome, status = handler(project, _payload(body))
    answer.update(credited=outcome.credited, skipped=outcome.skipped)
    if status != 200:
        return answer, status
    return _remember(delivery, project, event, answer), 200
