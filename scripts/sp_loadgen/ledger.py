"""check: replay unknown outcomes, compare every balance with the records."""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter

from .common import (
    SKU,
    Answer,
    Api,
    bearer,
    describe,
    load_state,
    new_rid,
    read_jsonl,
)


def replay(
    api: Api,
    path: str,
    body: dict,
    headers: dict,
    attempts: int = 3,
    settle_s: float = 90.0,
) -> Answer:
    """POST again a request that is idempotent by construction (same ref or same key).

    Retried on no answer and on 5xx other than a redemption's definite 502
    vendor_unavailable, so that a hiccup during the check does not read as a lost write.
    A key still in progress (409) belongs to a redemption whose request died: redeem's
    reconciler settles it within about 70 s, so that is waited for, up to ``settle_s``.
    """
    answer = Answer(status=None)
    attempt = 0
    settle_until = time.monotonic() + settle_s
    while True:
        answer = api.call(
            "POST", path, body, {**headers, "X-Request-ID": new_rid("replay")}
        )
        if answer.status == 409 and answer.code == "request_in_progress":
            if time.monotonic() > settle_until:
                break
            time.sleep(2.0)
            continue
        if answer.status is not None and (
            answer.status < 500 or answer.code == "vendor_unavailable"
        ):
            break
        attempt += 1
        if attempt >= attempts:
            break
        time.sleep(0.5 * attempt)
    return answer


def read_balance(api: Api, handle: str, attempts: int = 3) -> Answer:
    """GET a balance, retried on no answer and 5xx (a read changes nothing)."""
    answer = Answer(status=None)
    for attempt in range(attempts):
        path = f"/api/v1/balances/{handle}"
        answer = api.call("GET", path, None, {"X-Request-ID": new_rid("check")})
        if answer.status is not None and answer.status < 500:
            break
        time.sleep(0.5 * (attempt + 1))
    return answer


def resolve_contribution(api: Api, project: str, token: str, rec: dict) -> Answer:
    """Replay a contribution whose outcome is unknown; after a 200/201 it is credited once.

    200: the original went through after all; 201: it had not, and now it has.
    """
    body = {
        "handle": rec["handle"],
        "project": project,
        "kind": "commit",
        "ref": rec["ref"],
    }
    return replay(api, "/api/v1/contributions", body, bearer(token))


def resolve_redemption(
    api: Api, rec: dict, token: str, settle_s: float = 90.0
) -> tuple[bool, int]:
    """Replay a redemption with its Idempotency-Key: (resolved, points spent).

    A stored "refund pending" answer changes to "points refunded" once redeem's reconciler
    has settled the refund: that is waited for, up to ``settle_s``.
    """
    deadline = time.monotonic() + settle_s
    while True:
        answer = replay(
            api,
            "/api/v1/redemptions",
            {"handle": rec["handle"], "sku": SKU},
            {"Idempotency-Key": rec["idem_key"]} | bearer(token),
        )
        pending = (
            answer.code == "vendor_unavailable" and "refund pending" in answer.message
        )
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    if answer.status == 201 and isinstance(answer.body, dict):
        return True, int(answer.body["points_spent"])
    if answer.status == 409 and answer.code == "insufficient_points":
        return True, 0
    if answer.code == "vendor_unavailable" and not pending:
        return True, 0  # the vendor failed and the points were refunded
    return False, 0


# 503s that say nothing was spent: HAProxy found no server (the request never reached redeem),
# or redeem could not reach the ledger (it refunds or voids the debit). Any other 503, such as
# db_unavailable, may come after the debit went through: its outcome is unknown.
NOTHING_SPENT_503 = ("service_unavailable", "web_unavailable")


def redemption_outcome_unknown(rec: dict) -> bool:
    """True when a redemption's record does not say whether points were spent.

    Definite: 2xx/4xx, 502 vendor_unavailable (refunded), and the 503s of NOTHING_SPENT_503.
    Unknown: no answer, other 503s (the database went away mid-way), and other 5xx such as a
    502 or 504 from the balancer after the request went in.
    """
    status = rec.get("status")
    if status is None:
        return True
    if status < 500:
        return False
    if status == 503:
        return rec.get("code") not in NOTHING_SPENT_503
    return rec.get("code") != "vendor_unavailable"


def cmd_check(args: argparse.Namespace) -> int:
    state = load_state(args.state)
    api = Api(args.base_url or state["base_url"], args.timeout)
    project, project_token = state["project"], state["project_token"]
    handles = [u["handle"] for u in state["users"]]
    tokens = {u["handle"]: u["token"] for u in state["users"]}
    earned = {u["handle"]: int(u["seed_points"]) for u in state["users"]}
    spent = dict.fromkeys(handles, 0)
    problems: list[str] = []
    accepted: list[dict] = []
    counts = Counter()

    records = [r for path in args.records for r in read_jsonl(path, "records")]
    for rec in records:
        handle, kind, status = rec.get("handle"), rec.get("kind"), rec.get("status")
        if handle not in earned:
            problems.append(
                f"record {rec.get('rid')}: user {handle!r} is not in the state file"
            )
            continue
        if kind == "contribution":
            counts["contributions"] += 1
            if status == 201:
                earned[handle] += int(rec["points"])
                accepted.append(rec)
            elif status is None or status >= 500:
                answer = resolve_contribution(api, project, project_token, rec)
                if answer.status in (200, 201) and isinstance(answer.body, dict):
                    counts[f"contributions_replayed_{answer.status}"] += 1
                    earned[handle] += int(answer.body["points"])
                else:
                    problems.append(
                        f"contribution {rec['ref']}: outcome unknown, replay answered "
                        f"{describe(answer)}"
                    )
        elif kind == "redemption":
            counts["redemptions"] += 1
            if status == 201:
                spent[handle] += int(rec["points_spent"])
            elif redemption_outcome_unknown(rec) or "refund pending" in str(
                rec.get("message")
            ):
                resolved, points = resolve_redemption(api, rec, tokens[handle])
                counts["redemptions_replayed"] += 1
                if resolved:
                    spent[handle] += points
                else:
                    problems.append(
                        f"redemption {rec['idem_key']}: outcome unknown after replay"
                    )
    counts["contributions_accepted"] = len(accepted)

    balances: dict[str, dict] = {}
    for handle in handles:
        answer = read_balance(api, handle)
        if answer.status != 200 or not isinstance(answer.body, dict):
            problems.append(f"{handle}: balance read failed: {describe(answer)}")
            continue
        got = answer.body
        balances[handle] = got
        want = {"balance": earned[handle] - spent[handle]}
        if "earned" in got:
            want["earned"] = earned[handle]
        if "spent" in got:
            want["spent"] = spent[handle]
        for key, value in want.items():
            if got.get(key) != value:
                problems.append(f"{handle}: {key} is {got.get(key)}, expected {value}")
    counts["users"] = len(handles)

    rng = random.Random(args.seed)
    sample = rng.sample(accepted, min(args.duplicates, len(accepted)))
    for rec in sample:
        # Retried like any replay: a hiccup is not a double count, the re-read below is.
        answer = resolve_contribution(api, project, project_token, rec)
        if answer.status != 200 or not isinstance(answer.body, dict):
            problems.append(
                f"duplicate of {rec['ref']}: {describe(answer)}, expected HTTP 200"
            )
        elif answer.body.get("points") != rec["points"]:
            problems.append(
                f"duplicate of {rec['ref']}: points {answer.body.get('points')}, "
                f"first answer said {rec['points']}"
            )
    for handle in sorted({r["handle"] for r in sample}):
        answer = read_balance(api, handle)
        before = balances.get(handle, {}).get("balance")
        after = answer.body.get("balance") if isinstance(answer.body, dict) else None
        if answer.status != 200 or after != before:
            problems.append(
                f"{handle}: balance {before} became {after} after duplicate posts"
            )
    counts["duplicates_posted"] = len(sample)
    api.close()

    for problem in problems:
        print(f"MISMATCH {problem}")
    summary = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    verdict = "FAILED" if problems else "OK"
    print(f"check: {verdict} {summary} problems={len(problems)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {"ok": not problems, "counts": dict(counts), "problems": problems}
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 1 if problems else 0
