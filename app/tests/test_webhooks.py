"""GitHub webhook deliveries to web, over real HTTP: recorded GitHub-shaped payloads
(tests/fixtures), signed with a real HMAC-SHA256 under the project's webhook secret, exactly
as GitHub signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from sprintpoints.services import github

from .conftest import assert_error, unique

FIXTURES = Path(__file__).parent / "fixtures"
PUSH = "github_push.json"
ISSUES_CLOSED = "github_issues_closed.json"
# The commits of the recorded push, in its order, and who wrote them there.
MONA_COMMITS = [
    "e8ebc71f0e67fffa1b1aac44b5d9efd9f75f45b5",
    "a644019e666a3c38528e6e21f7b6632ebd61d6fc",
]
OUTSIDER_COMMIT = "f7d2f013e5e7ff30b0330b1f830cc6ad2e3c5d59"
BOT_COMMIT = "8d0ed85cec461f280ffc163acd2483f7f40842dd"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_signatures_match_githubs_published_example():
    # docs.github.com, "Validating webhook deliveries": the test secret, payload and signature.
    secret, payload = "It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(secret, payload) == expected
    assert github._signed(payload, secret, expected)
    assert not github._signed(payload, secret, expected.upper())
    assert not github._signed(payload, secret, expected[7:])
    assert not github._signed(payload, secret, None)


class Hook:
    """A project with a member, and deliveries to it as GitHub makes them."""

    def __init__(self, api):
        self.api = api
        self.handle, self.project = api.member()
        self.outsider = api.user()  # registered, not a member
        self.secret = api.webhook_secrets[self.project]

    def recorded(self, name: str) -> bytes:
        """A fixture with its GitHub usernames replaced by this test's handles."""
        text = (FIXTURES / name).read_text()
        return (
            text.replace("mona-dev", self.handle).replace("octo-outsider", self.outsider).encode()
        )

    def deliver(
        self,
        body: bytes,
        event: str = "push",
        *,
        delivery: str | None = None,
        signature: str | None = None,
        project: str | None = None,
        **headers: str,
    ) -> requests.Response:
        sent = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/8f3b2e1",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-GitHub-Hook-ID": "512004771",
            "X-Hub-Signature-256": signature if signature is not None else sign(self.secret, body),
            **headers,
        }
        url = f"{self.api.live['web'].url}/api/v1/webhooks/github/{project or self.project}"
        return requests.post(url, data=body, headers=sent, timeout=10)

    def balance(self) -> int:
        return self.api.balance(self.handle)


@pytest.fixture
def hook(api) -> Hook:
    return Hook(api)


def test_a_signed_push_credits_each_members_commit(hook):
    answer = hook.deliver(hook.recorded(PUSH), delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["delivery"], body["event"], body["project"]) == (
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "push",
        hook.project,
    )
    assert [(c["handle"], c["ref"], c["points"]) for c in body["credited"]] == [
        (hook.handle, ref, 10) for ref in MONA_COMMITS
    ]
    assert all(isinstance(c["contribution_id"], int) for c in body["credited"])
    assert body["skipped"] == [
        {"ref": OUTSIDER_COMMIT, "handle": hook.outsider, "reason": "not_a_member"},
        {"ref": BOT_COMMIT, "handle": None, "reason": "author_has_no_github_account"},
    ]
    assert hook.balance() == 20
    assert hook.api.balance(hook.outsider) == 0


def test_a_flipped_byte_is_refused_and_credits_nothing(hook):
    body = hook.recorded(PUSH)
    signature = sign(hook.secret, body)
    at = body.index(b"a replayed ref")
    flipped = body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]
    assert_error(hook.deliver(flipped, signature=signature), 401, "invalid_signature")
    assert hook.balance() == 0


@pytest.mark.parametrize(
    "signature",
    ["", "sha256=", "sha1=0123456789abcdef0123456789abcdef01234567", "sha256=" + "0" * 64, "é"],
    ids=["empty", "no digest", "sha1", "another digest", "non-ascii"],
)
def test_a_bad_or_missing_signature_is_401(hook, signature):
    body = hook.recorded(PUSH)
    assert_error(hook.deliver(body, signature=signature), 401, "invalid_signature")
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push"}
    url = f"{hook.api.live['web'].url}/api/v1/webhooks/github/{hook.project}"
    unsigned = requests.post(url, data=body, headers=headers, timeout=10)
    assert_error(unsigned, 401, "invalid_signature")
    other_secret = hook.deliver(body, signature=sign("not-the-secret", body))
    assert_error(other_secret, 401, "invalid_signature")
    assert hook.balance() == 0


def test_a_redelivery_gets_the_first_answer_and_credits_nothing_more(hook):
    body, delivery = hook.recorded(PUSH), str(uuid.uuid4())
    first = hook.deliver(body, delivery=delivery)
    again = hook.deliver(body, delivery=delivery)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content  # byte for byte
    assert hook.balance() == 20


def test_the_same_commits_pushed_again_earn_nothing_twice(hook):
    assert hook.deliver(hook.recorded(PUSH)).status_code == 200
    # The same commits on another branch: a new delivery, the same commit ids.
    branch = hook.recorded(PUSH).replace(b'"refs/heads/main"', b'"refs/heads/release-0.4"')
    answer = hook.deliver(branch)
    assert answer.status_code == 200, answer.text
    assert answer.json()["credited"] == []
    reasons = {entry["ref"]: entry["reason"] for entry in answer.json()["skipped"]}
    assert reasons == {
        MONA_COMMITS[0]: "already_credited",
        MONA_COMMITS[1]: "already_credited",
        OUTSIDER_COMMIT: "not_a_member",
        BOT_COMMIT: "author_has_no_github_account",
    }
    assert hook.balance() == 20


def test_a_manual_credit_of_a_commit_the_hook_credits_later_counts_once(hook):
    manual = hook.api.contribute(hook.handle, hook.project, "commit", MONA_COMMITS[0])
    assert manual.status_code == 201
    answer = hook.deliver(hook.recorded(PUSH)).json()
    assert [c["ref"] for c in answer["credited"]] == [MONA_COMMITS[1]]
    assert hook.balance() == 20


def test_an_unknown_project_answers_exactly_like_a_bad_signature(hook, api, databases):
    body = hook.recorded(PUSH)
    bad_signature = hook.deliver(body, signature=sign("guess", body))
    without_secret = unique("oldproj")  # a project from before tokens: no secret yet
    databases["registry"].sql("INSERT INTO projects (name) VALUES (%s)", (without_secret,))
    for project in (unique("ghost"), without_secret, quote("not a project!", safe="")):
        answer = hook.deliver(body, project=project, signature=sign("guess", body))
        assert answer.status_code == bad_signature.status_code == 401
        assert answer.json() == bad_signature.json()
        assert set(answer.headers) - {"Date", "X-Request-ID"} == set(bad_signature.headers) - {
            "Date",
            "X-Request-ID",
        }
    assert hook.balance() == 0


def test_a_body_over_the_limit_is_413_before_any_signature_work(hook):
    too_big = b'{"commits": [], "pad": "' + b"x" * github.WEBHOOK_MAX_BYTES + b'"}'
    # No signature, no such project: the size alone decides.
    answer = hook.deliver(too_big, project=unique("ghost"), signature="")
    assert_error(answer, 413, "payload_too_large")

    def chunks():  # no Content-Length: refused while reading
        for _ in range(20):
            yield b"x" * (github.WEBHOOK_MAX_BYTES // 10)

    chunked = hook.deliver(chunks(), signature="")  # type: ignore[arg-type]
    assert_error(chunked, 413, "payload_too_large")
    assert hook.balance() == 0
    # A signed push of exactly the limit is taken.
    push = hook.recorded(PUSH)
    fits = push[:-2] + b', "pad": "' + b"x" * (github.WEBHOOK_MAX_BYTES - len(push) - 11) + b'"}\n'
    assert len(fits) == github.WEBHOOK_MAX_BYTES
    assert hook.deliver(fits).status_code == 200
    assert hook.balance() == 20


def test_a_push_of_the_api_limit_and_more_is_taken(hook):
    # Bigger than the JSON API's 64 KiB: GitHub lists every changed path of every commit.
    payload = json.loads(hook.recorded(PUSH))
    payload["commits"][0]["modified"] = [f"src/module_{i}.py" for i in range(5000)]
    body = json.dumps(payload).encode()
    assert len(body) > 64 * 1024
    answer = hook.deliver(body)
    assert answer.status_code == 200, answer.text
    assert hook.balance() == 20


def test_ping_is_200_and_other_events_202(hook):
    ping = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 512004771}).encode()
    answer = hook.deliver(ping, "ping")
    assert answer.status_code == 200
    assert answer.json()["credited"] == []
    for event in ("star", "pull_request", "workflow_run"):
        ignored = hook.deliver(hook.recorded(PUSH), event)
        assert ignored.status_code == 202, ignored.text
        assert ignored.json()["credited"] == []
    assert hook.balance() == 0


def test_a_closed_issue_credits_its_closer(hook):
    body, delivery = hook.recorded(ISSUES_CLOSED), str(uuid.uuid4())
    answer = hook.deliver(body, "issues", delivery=delivery)
    assert answer.status_code == 200, answer.text
    credited = answer.json()["credited"]
    assert [(c["handle"], c["ref"], c["points"]) for c in credited] == [
        (hook.handle, "issue-7", 25)
    ]
    assert hook.api.balance(hook.outsider) == 0  # the issue's author earns nothing
    assert hook.deliver(body, "issues", delivery=delivery).content == answer.content
    reopened_and_closed = hook.deliver(body, "issues")  # another delivery, the same issue
    assert reopened_and_closed.json()["skipped"] == [
        {"ref": "issue-7", "handle": hook.handle, "reason": "already_credited"}
    ]
    assert hook.balance() == 25


def test_a_closed_issue_of_an_outsider_is_skipped(hook):
    body = hook.recorded(ISSUES_CLOSED)
    by_outsider = json.loads(body)
    by_outsider["sender"]["login"] = hook.outsider
    answer = hook.deliver(json.dumps(by_outsider).encode(), "issues")
    assert answer.status_code == 200
    assert answer.json()["skipped"] == [
        {"ref": "issue-7", "handle": hook.outsider, "reason": "not_a_member"}
    ]


@pytest.mark.parametrize("action", ["opened", "edited", "reopened", "labeled"])
def test_other_issue_actions_are_202_and_credit_nothing(hook, action):
    payload = json.loads(hook.recorded(ISSUES_CLOSED))
    payload["action"] = action
    answer = hook.deliver(json.dumps(payload).encode(), "issues")
    assert answer.status_code == 202
    assert hook.balance() == 0


def _push_with(hook, change) -> bytes:
    payload = json.loads(hook.recorded(PUSH))
    change(payload)
    return json.dumps(payload).encode()


MALFORMED = {
    "not json": ("push", lambda hook: b"{not json"),
    "json array": ("push", lambda hook: b"[1, 2]"),
    "commits not a list": ("push", lambda hook: _push_with(hook, lambda p: p.update(commits={}))),
    "commit without id": (
        "push",
        lambda hook: _push_with(hook, lambda p: p["commits"][-1].pop("id")),
    ),
    "commit id not hex": (
        "push",
        lambda hook: _push_with(hook, lambda p: p["commits"][-1].update(id="'; DROP TABLE x")),
    ),
    "author a string": (
        "push",
        lambda hook: _push_with(hook, lambda p: p["commits"][-1].update(author="mona")),
    ),
    "username a number": (
        "push",
        lambda hook: _push_with(hook, lambda p: p["commits"][-1]["author"].update(username=7)),
    ),
    "issue number a string": (
        "issues",
        lambda hook: json.dumps(
            {**json.loads(hook.recorded(ISSUES_CLOSED)), "issue": {"number": "7"}}
        ).encode(),
    ),
    "no sender": (
        "issues",
        lambda hook: json.dumps(
            {k: v for k, v in json.loads(hook.recorded(ISSUES_CLOSED)).items() if k != "sender"}
        ).encode(),
    ),
    "action missing": ("issues", lambda hook: b'{"issue": {"number": 7}}'),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_signed_but_malformed_payload_is_400_and_credits_nothing(hook, case):
    event, make = MALFORMED[case]
    body = make(hook)
    delivery = str(uuid.uuid4())
    assert_error(hook.deliver(body, event, delivery=delivery), 400, "invalid_payload")
    assert hook.balance() == 0
    # Nothing was recorded for the delivery: a fixed redelivery of it is processed.
    if event == "push":
        assert hook.deliver(hook.recorded(PUSH), delivery=delivery).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{"X-GitHub-Event": ""}, {"X-GitHub-Delivery": ""}, {"X-GitHub-Delivery": "a b;c"}],
    ids=["no event", "no delivery", "bad delivery"],
)
def test_a_signed_delivery_without_githubs_headers_is_400(hook, headers):
    answer = hook.deliver(hook.recorded(PUSH), **headers)
    assert_error(answer, 400, "invalid_header")
    assert hook.balance() == 0


def test_a_form_encoded_delivery_is_read_like_githubs_other_content_type(hook):
    body = b"payload=" + quote(hook.recorded(PUSH).decode(), safe="").encode()
    answer = hook.deliver(body, **{"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200, answer.text
    assert hook.balance() == 20


def test_a_delivery_id_of_another_project_is_409(hook, api):
    other = Hook(api)
    delivery = str(uuid.uuid4())
    assert hook.deliver(hook.recorded(PUSH), delivery=delivery).status_code == 200
    replayed = other.deliver(other.recorded(PUSH), delivery=delivery)
    assert_error(replayed, 409, "delivery_conflict")
    assert other.balance() == 0


def test_a_rotated_webhook_secret_is_dead_at_once(hook, api):
    rotated = api.post(
        "registry",
        f"/api/v1/projects/{hook.project}/tokens",
        None,
        headers=api.as_admin(hook.project),
    )
    assert rotated.status_code == 201
    api.admin_tokens[hook.project] = rotated.json()["admin_token"]
    old_secret, hook.secret = hook.secret, rotated.json()["webhook_secret"]
    body = hook.recorded(PUSH)
    assert_error(hook.deliver(body, signature=sign(old_secret, body)), 401, "invalid_signature")
    assert hook.deliver(body).status_code == 200
    assert hook.balance() == 20
