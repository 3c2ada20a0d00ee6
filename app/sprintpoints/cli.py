"""The ``sprintpoints`` command: ``migrate``, ``check-config``, ``reconcile`` and
``issue-token``."""

from __future__ import annotations

import argparse
import json
import sys

import psycopg2

from .config import ConfigError, load_settings
from .migrate import MigrationError, migrate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sprintpoints", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply the pending migrations of the service named by SERVICE")
    sub.add_parser("check-config", help="validate the environment and exit")
    sub.add_parser(
        "reconcile", help="redeem: settle interrupted redemptions now (one pass) and exit"
    )
    issue = sub.add_parser(
        "issue-token",
        help="registry: give a user a new API token, or a project a new admin token and"
        " webhook secret (the old ones stop working); prints them once, as JSON",
    )
    issue.add_argument("kind", choices=("user", "project"))
    issue.add_argument("name", help="the user's handle or the project's name")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(migrate=args.command == "migrate")
        if args.command == "check-config":
            print(f"{settings.service}: configuration is valid")
            return 0
        if args.command == "reconcile":
            return _reconcile(settings)
        if args.command == "issue-token":
            return _issue_token(settings, args.kind, args.name)
        migrate(settings, log=lambda line: print(line, flush=True))
    except ConfigError as exc:
        print(f"sprintpoints: configuration error: {exc}", file=sys.stderr)
        return 2
    except (MigrationError, psycopg2.Error) as exc:
        what = "migration" if args.command == "migrate" else args.command
        print(f"sprintpoints: {what} failed: {str(exc).strip()}", file=sys.stderr)
        return 1
    return 0


def _issue_token(settings, kind: str, name: str) -> int:
    """How users and projects made before tokens existed get theirs (and a lost one is
    replaced). The token goes to stdout once; registry keeps only its digest."""
    if settings.service != "registry":
        service = settings.service
        print(f"sprintpoints: issue-token runs in registry, not {service}", file=sys.stderr)
        return 2
    from .services import registry

    conn = psycopg2.connect(**settings.dsn_kwargs())
    try:
        with conn, conn.cursor() as cur:
            if kind == "user":
                token = registry.issue_user_token(cur, settings.token_digest_key, name)
                issued = {"handle": name, "token": token} if token else None
            else:
                credentials = registry.issue_project_credentials(
                    cur, settings.token_digest_key, name
                )
                issued = {"name": name, **credentials} if credentials else None
    finally:
        conn.close()
    if issued is None:
        print(f"sprintpoints: no {kind} named {name!r}", file=sys.stderr)
        return 1
    print(json.dumps(issued), flush=True)
    return 0


def _reconcile(settings) -> int:
    if settings.service != "redeem":
        print(f"sprintpoints: reconcile runs in redeem, not {settings.service}", file=sys.stderr)
        return 2
    from . import create_app
    from .services import reconcile

    counts = reconcile.run_once(create_app())
    print(
        "reconcile: " + (" ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "nothing due")
    )
    return 1 if counts.get("retry") else 0


if __name__ == "__main__":
    sys.exit(main())
