"""API tokens: their format, the digest registry stores instead of them, and the bearer
handling of every service.

A token is 256 random bits with a prefix naming its kind (``spu_`` a user's, ``spa_`` a
project's admin token), so a token of the wrong kind or length is refused before any lookup.
registry stores only an HMAC of each token under ``TOKEN_DIGEST_KEY`` (random tokens need no
slow salted hash; the key keeps a stolen table useless). registry checks a token itself; web
and redeem ask registry once per request that needs one, never caching the answer, so a
rotated token is dead at once everywhere. No message and no log line carries a token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from flask import request

from .errors import ApiError
from .http import ServiceClient, UpstreamError

PREFIXES = {"user": "spu_", "project": "spa_"}
KINDS = {prefix: kind for kind, prefix in PREFIXES.items()}
# secrets.token_urlsafe(32): 32 bytes in unpadded base64url are 43 characters.
TOKEN_RE = re.compile(r"(spu_|spa_)[A-Za-z0-9_-]{43}")
_REALM = 'Bearer realm="sprintpoints"'


@dataclass(frozen=True)
class Identity:
    """Whom a valid token stands for: a user (``name`` is the handle) or a project's admin."""

    kind: str
    name: str

    def is_user(self, handle: str) -> bool:
        return self.kind == "user" and self.name == handle

    def is_admin_of(self, project: str) -> bool:
        return self.kind == "project" and self.name == project


def new_token(kind: str) -> str:
    return PREFIXES[kind] + secrets.token_urlsafe(32)


def new_webhook_secret() -> str:
    # GitHub takes any string as a webhook's secret; hex survives every copy and paste.
    return secrets.token_hex(32)


def well_formed(token: str) -> bool:
    return TOKEN_RE.fullmatch(token) is not None


def kind_of(token: str) -> str:
    """The kind of a well-formed token."""
    return KINDS[token[:4]]


def digest(key: str, token: str) -> str:
    return hmac.new(key.encode(), token.encode(), hashlib.sha256).hexdigest()


# --- bearer handling -----------------------------------------------------------------------------


def unauthorized(message: str, *, presented: bool) -> ApiError:
    """401: no token (RFC 6750: no error code then), or one that is malformed or unknown."""
    if not presented:
        return ApiError(401, "unauthorized", message, {"WWW-Authenticate": _REALM})
    challenge = f'{_REALM}, error="invalid_token"'
    return ApiError(401, "invalid_token", message, {"WWW-Authenticate": challenge})


def forbidden(message: str) -> ApiError:
    """403: a valid token without the right to this call."""
    challenge = f'{_REALM}, error="insufficient_scope"'
    return ApiError(403, "forbidden", message, {"WWW-Authenticate": challenge})


def presented_token() -> str | None:
    """The request's bearer token; None without an Authorization header. A header that is
    not ``Bearer <token>`` with a well-formed token is a 401 here, before any lookup."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not well_formed(token.strip()):
        raise unauthorized(
            "the Authorization header must be 'Bearer <token>' with a sprintpoints API token",
            presented=True,
        )
    return token.strip()


def require(verify: Callable[[str], Identity | None]) -> Identity:
    """The identity of the request's bearer token, or a 401."""
    token = presented_token()
    if token is None:
        raise unauthorized(
            "this call needs an API token: Authorization: Bearer <token>", presented=False
        )
    identity = verify(token)
    if identity is None:
        raise unauthorized("the API token is not valid (unknown, or replaced)", presented=True)
    return identity


def optional(verify: Callable[[str], Identity | None]) -> Identity | None:
    """The identity of the bearer token when one is presented (a bad one is still a 401)."""
    if request.headers.get("Authorization") is None:
        return None
    return require(verify)


def verify_with(registry: ServiceClient) -> Callable[[str], Identity | None]:
    """A token check that asks registry (one call, no cache: a rotation takes effect at once)."""

    def verify(token: str) -> Identity | None:
        try:
            reply = registry.post("/internal/v1/tokens/verify", {"token": token}, retries=1)
        except UpstreamError as exc:
            raise _registry_unavailable("the registry service is not reachable") from exc
        if reply.status == 200:
            kind = reply.body.get("kind")
            name = reply.body.get("handle" if kind == "user" else "project")
            if kind in PREFIXES and isinstance(name, str):
                return Identity(kind, name)
        elif reply.status == 404 and reply.error_code == "token_unknown":
            return None
        # Anything else, a registry of the version before tokens included (its 404 is a
        # missing route): the token may be fine, so the client should retry, not re-login.
        raise _registry_unavailable(f"the registry could not check the token ({reply.status})")

    return verify


def _registry_unavailable(message: str) -> ApiError:
    return ApiError(503, "registry_unavailable", message)
