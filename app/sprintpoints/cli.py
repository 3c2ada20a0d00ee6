"""The ``sprintpoints`` command: ``migrate``, ``check-config`` and ``reconcile``."""

from __future__ import annotations

import argparse
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
    args = parser.parse_args(argv)
    try:
        settings = load_settings(migrate=args.command == "migrate")
        if args.command == "check-config":
            print(f"{settings.service}: configuration is valid")
            return 0
        if args.command == "reconcile":
            return _reconcile(settings)
        migrate(settings, log=lambda line: print(line, flush=True))
    except ConfigError as exc:
        print(f"sprintpoints: configuration error: {exc}", file=sys.stderr)
        return 2
    except (MigrationError, psycopg2.Error) as exc:
        print(f"sprintpoints: migration failed: {str(exc).strip()}", file=sys.stderr)
        return 1
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
