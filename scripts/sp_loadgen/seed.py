"""setup: users, a project and starting balances, written to the state file."""

from __future__ import annotations

import argparse
import json
import secrets
import time
from datetime import UTC, datetime

from .common import Answer, Api, bearer, describe, die, new_rid


def setup_call(
    api: Api,
    method: str,
    path: str,
    body: dict,
    ok: set[int],
    attempts: int = 4,
    token: str | None = None,
) -> Answer:
    """Setup is not under test: retry connection errors and 5xx a few times."""
    answer = Answer(status=None)
    headers = {"X-Request-ID": new_rid("setup")} | (bearer(token) if token else {})
    for attempt in range(attempts):
        answer = api.call(method, path, body, headers=headers)
        if answer.status in ok:
            return answer
        if answer.status is not None and answer.status < 500:
            break
        time.sleep(0.5 * (attempt + 1))
    die(f"setup: {method} {path} {json.dumps(body)} -> {describe(answer)}")


def cmd_setup(args: argparse.Namespace) -> int:
    run_id = args.run_id or (
        "lg" + datetime.now(UTC).strftime("%m%dt%H%M%S") + secrets.token_hex(2)
    )
    if len(run_id) > 30 or not run_id.replace("-", "").isalnum():
        die(
            "--run-id: at most 30 of [A-Za-z0-9-] (handles are <run id>-uNNN, 39 chars max)"
        )
    api = Api(args.base_url, args.timeout)
    project = f"{run_id}-proj"
    # A retried POST whose first attempt went through would answer 409 and no token: setup
    # asks once (a run's names are new, so a conflict means the first attempt succeeded).
    created = setup_call(api, "POST", "/api/v1/projects", {"name": project}, {201}, 1)
    project_token = created.body["admin_token"]
    users = []
    for i in range(1, args.users + 1):
        handle = f"{run_id}-u{i:03d}"
        answer = setup_call(api, "POST", "/api/v1/users", {"handle": handle}, {201}, 1)
        token = answer.body["token"]
        setup_call(
            api,
            "POST",
            f"/api/v1/projects/{project}/members",
            {"handle": handle},
            {200, 201},
            token=project_token,
        )
        seed_points, seed_refs = 0, []
        for n in range(1, args.seed_contributions + 1):
            ref = f"seed-{handle}-{n}"
            answer = setup_call(
                api,
                "POST",
                "/api/v1/contributions",
                {"handle": handle, "project": project, "kind": "issue", "ref": ref},
                {200, 201},
                token=project_token,
            )
            seed_points += int(answer.body["points"])
            seed_refs.append(ref)
        users.append(
            {
                "handle": handle,
                "token": token,
                "seed_points": seed_points,
                "seed_refs": seed_refs,
            }
        )
    api.close()
    state = {
        "run_id": run_id,
        "base_url": args.base_url.rstrip("/"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "project": project,
        "project_token": project_token,
        "seed_kind": "issue",
        "users": users,
    }
    args.state.parent.mkdir(parents=True, exist_ok=True)
    # The run's API tokens are in it: readable by its owner only.
    args.state.touch(mode=0o600)
    args.state.chmod(0o600)
    args.state.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    total = sum(u["seed_points"] for u in users)
    print(
        f"setup: run_id={run_id} project={project} users={len(users)} "
        f"seed_points={total} state={args.state}"
    )
    return 0
