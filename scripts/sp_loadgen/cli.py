"""The command line: the argparse parser of the four subcommands, and main."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import REPORTS_DIR, die
from .ledger import cmd_check
from .report import cmd_report
from .run import cmd_run, parse_mix
from .seed import cmd_setup


def build_parser(doc: str | None = None) -> argparse.ArgumentParser:
    """The parser; ``doc`` is loadgen.py's docstring, --help shows its first part."""
    parser = argparse.ArgumentParser(
        prog="loadgen.py",
        description=doc.split("\nSubcommands:")[0] if doc else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Record and marks formats: the module docstring (pydoc scripts/loadgen.py).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("setup", help="create users, a project and starting balances")
    p.add_argument(
        "--base-url",
        required=True,
        help="public frontend, e.g. https://127.0.0.1:8443 (trusting SPRINTPOINTS_CA_BUNDLE, else the lab's CA)",
    )
    p.add_argument(
        "--state", type=Path, required=True, help="state file to write (JSON)"
    )
    p.add_argument("--users", type=int, default=20, help="users to create (default 20)")
    p.add_argument(
        "--seed-contributions",
        type=int,
        default=4,
        help="issue contributions credited to each user first (default 4 = 100 points)",
    )
    p.add_argument("--run-id", help="name prefix (default: lg<MMDD>t<HHMMSS><random>)")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="read timeout, s (default 10)"
    )
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("run", help="drive the mixed load and record every request")
    p.add_argument(
        "--state", type=Path, required=True, help="state file written by setup"
    )
    p.add_argument(
        "--out", type=Path, required=True, help="records file to write (JSONL)"
    )
    p.add_argument("--base-url", help="override the state file's base URL")
    p.add_argument(
        "--clients", type=int, default=8, help="concurrent clients (default 8)"
    )
    p.add_argument(
        "--duration", type=float, default=60.0, help="hard cap in seconds (default 60)"
    )
    p.add_argument("--stop-file", type=Path, help="stop as soon as this file exists")
    p.add_argument(
        "--started-file",
        type=Path,
        help="write this file (epoch time) once every client has had its first answer",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="total requests/s over all clients; 0 = as fast as they can (default 100)",
    )
    p.add_argument(
        "--mix",
        type=parse_mix,
        default=(60.0, 30.0, 10.0),
        help="weights READS,CONTRIBUTIONS,REDEMPTIONS (default 60,30,10)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="read timeout per request, s (default 10)",
    )
    p.add_argument(
        "--vendor-failures-ok",
        action="store_true",
        help="a redemption's 502 vendor_unavailable is not a failure",
    )
    p.add_argument("--seed", help="random seed for the request mix (default: random)")
    p.add_argument(
        "--progress", type=float, default=5.0, help="progress line every N s; 0 = none"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="prove no contribution was lost or counted twice")
    p.add_argument(
        "--state", type=Path, required=True, help="state file written by setup"
    )
    p.add_argument(
        "--records",
        type=Path,
        nargs="+",
        required=True,
        help="records file(s) of every run",
    )
    p.add_argument("--base-url", help="override the state file's base URL")
    p.add_argument(
        "--duplicates",
        type=int,
        default=20,
        help="accepted contributions to post again, expecting 200 (default 20)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed for that sample")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="read timeout, s (default 10)"
    )
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "report", help="rollout report (JSON + PNG) and version assertions"
    )
    p.add_argument(
        "--records", type=Path, required=True, help="records file written by run"
    )
    p.add_argument(
        "--marks", type=Path, help="marks file written by the rollout playbook"
    )
    p.add_argument(
        "--reports-dir",
        type=Path,
        default=REPORTS_DIR,
        help=f"where to write rollout-<ts>.json/.png (default {REPORTS_DIR})",
    )
    p.add_argument("--tag", help="suffix for the report's name, e.g. canary-fail")
    p.add_argument(
        "--no-latest",
        action="store_true",
        help="do not update rollout-latest.json/.png",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--expect-versions",
        nargs=2,
        metavar=("OLD", "NEW"),
        help="requests started before rollout_start answered by OLD, after rollout_end by NEW",
    )
    group.add_argument(
        "--expect-only-version",
        metavar="OLD",
        help="every request answered by OLD (a rollout that failed and rolled back)",
    )
    p.add_argument(
        "--expect-stopped-at",
        metavar="HOST",
        help="the rollout failed on HOST (a failed mark) and drained no other host",
    )
    p.add_argument(
        "--min-outside",
        type=int,
        default=1,
        help="with --expect-versions: requests needed before and after the rollout (default 1)",
    )
    p.add_argument("--max-failures", type=int, help="exit 1 when more requests failed")
    p.add_argument(
        "--target-drain",
        type=float,
        default=15.0,
        help="drain-to-enabled target, s (15)",
    )
    p.add_argument(
        "--target-wall", type=float, default=90.0, help="rollout wall target, s (90)"
    )
    p.add_argument(
        "--enforce-targets", action="store_true", help="exit 1 when a target is missed"
    )
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None, doc: str | None = None) -> int:
    args = build_parser(doc).parse_args(argv)
    if getattr(args, "clients", 1) < 1:
        die("--clients must be at least 1")
    if getattr(args, "duration", 1) <= 0:
        die("--duration must be positive")
    return args.func(args)
