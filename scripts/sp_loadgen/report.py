"""report: records and rollout marks to a JSON report, a plot and assertions."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import KINDS, NO_VERSION, die, log, percentile, read_jsonl, rnd


def mark_time(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()


def load_marks(path: Path | None) -> list[dict]:
    if path is None:
        return []
    marks = []
    for row in read_jsonl(path, "marks"):
        try:
            marks.append({**row, "t": mark_time(row["t"]), "event": str(row["event"])})
        except (KeyError, ValueError) as exc:
            log(f"warning: ignoring mark {row}: {exc}")
    return sorted(marks, key=lambda m: m["t"])


def host_windows(marks: list[dict]) -> dict[str, dict]:
    """Per host: each drain paired with the next enabled, and a drain left open."""
    hosts: dict[str, dict] = {}
    for mark in marks:
        host = mark.get("host")
        if mark["event"] not in ("drain", "enabled", "failed") or not host:
            continue
        entry = hosts.setdefault(
            host,
            {"drain_to_enabled_s": [], "failed": False, "open": None},
        )
        if mark["event"] == "drain":
            entry["open"] = mark["t"]
        elif mark["event"] == "failed":
            entry["failed"] = True
        elif entry["open"] is not None:
            entry["drain_to_enabled_s"].append(round(mark["t"] - entry["open"], 2))
            entry["open"] = None
    return hosts


def check_versions(
    args, records: list[dict], start: float | None, end: float | None
) -> list:
    """The --expect-versions / --expect-only-version assertions; a list of violations."""
    violations: list[str] = []

    def offenders(rows: list[dict], allowed: set[str], what: str) -> None:
        silent = [r for r in rows if not r.get("version")]
        wrong = [r for r in rows if r.get("version") and r["version"] not in allowed]
        want = " or ".join(sorted(allowed))
        if wrong:
            seen = ", ".join(
                f"{v} x{n}" for v, n in Counter(r["version"] for r in wrong).items()
            )
            first = wrong[0]
            violations.append(
                f"{len(wrong)} request(s) {what} were answered by {seen} instead of {want} "
                f"(first: {first['rid']} {first['kind']} at t0={first['t0']:.3f})"
            )
        if silent:
            errors = ", ".join(
                f"{e} x{n}"
                for e, n in Counter(
                    r.get("error") or f"HTTP {r.get('status')}" for r in silent
                ).items()
            )
            violations.append(
                f"{len(silent)} request(s) {what} got no X-App-Version ({errors}), "
                f"so none can be shown to come from {want} (first: {silent[0]['rid']})"
            )

    if args.expect_only_version:
        offenders(records, {args.expect_only_version}, "in the whole run")
    if args.expect_versions:
        old, new = args.expect_versions
        if start is None or end is None:
            violations.append(
                "--expect-versions needs rollout_start and rollout_end marks"
            )
            return violations
        before = [r for r in records if r["t0"] < start]
        after = [r for r in records if r["t0"] > end]
        during = [r for r in records if start <= r["t0"] <= end]
        if len(before) < args.min_outside:
            violations.append(
                f"only {len(before)} request(s) started before rollout_start: start the load "
                "before the rollout, or the old version is never observed"
            )
        if len(after) < args.min_outside:
            violations.append(
                f"only {len(after)} request(s) started after rollout_end: keep the load "
                "running a little after the rollout, or the new version is never observed"
            )
        offenders(before, {old}, "started before rollout_start")
        offenders(after, {new}, "started after rollout_end")
        offenders(during, {old, new}, "started during the rollout")
    return violations


def summarise(records: list[dict]) -> dict:
    latencies = [r["latency_ms"] for r in records]
    first = min(r["t0"] for r in records)
    last = max(r["t1"] for r in records)
    duration = max(last - first, 1e-9)
    by_kind = {}
    for kind in KINDS:
        rows = [r for r in records if r["kind"] == kind]
        lat = [r["latency_ms"] for r in rows]
        by_kind[kind] = {
            "requests": len(rows),
            "failures": sum(not r["ok"] for r in rows),
            "p50_ms": rnd(percentile(lat, 50)),
            "p99_ms": rnd(percentile(lat, 99)),
        }
    return {
        "start": first,
        "end": last,
        "duration_s": round(duration, 2),
        "requests": len(records),
        "failures": sum(not r["ok"] for r in records),
        "failure_reasons": dict(
            Counter(
                f"{r['kind']}: {r['reason']}" for r in records if not r["ok"]
            ).most_common()
        ),
        "rps_mean": round(len(records) / duration, 1),
        "latency_ms": {
            "p50": rnd(percentile(latencies, 50)),
            "p99": rnd(percentile(latencies, 99)),
            "max": rnd(max(latencies)),
        },
        "versions": dict(
            Counter(r.get("version") or NO_VERSION for r in records).most_common()
        ),
        "by_kind": by_kind,
        "contributions_accepted": sum(r.get("points") is not None for r in records),
        "redemptions_fulfilled": sum(
            r.get("points_spent") is not None for r in records
        ),
    }


def plot(
    records: list[dict], marks: list[dict], hosts: dict, title: str, path: Path
) -> None:
    import matplotlib  # only the report needs it; keeps `run` light

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = min(r["t0"] for r in records)
    # Whole seconds only: a trailing partial second would read as a drop in traffic.
    nbins = max(1, int(max(r["t0"] for r in records) - base))
    rows = [r for r in records if r["t0"] - base < nbins]
    edges = list(range(nbins + 1))
    total = [0] * nbins
    errors = [0] * nbins
    lat: list[list[float]] = [[] for _ in range(nbins)]
    versions: list[str] = []  # in order of first appearance: old, then new
    for r in sorted(rows, key=lambda r: r["t0"]):
        if (r.get("version") or NO_VERSION) not in versions:
            versions.append(r.get("version") or NO_VERSION)
    per_version = {v: [0] * nbins for v in versions}
    for r in rows:
        b = int(r["t0"] - base)
        total[b] += 1
        lat[b].append(r["latency_ms"])
        per_version[r.get("version") or NO_VERSION][b] += 1
        if not r["ok"]:
            errors[b] += 1

    def steps(values: list) -> list:
        return [*values, values[-1]]  # repeat the last value so the last bin is drawn

    p50 = [math.nan if not v else percentile(v, 50) for v in lat]
    p99 = [math.nan if not v else percentile(v, 99) for v in lat]
    share = {
        v: [c / n if n else 0 for c, n in zip(per_version[v], total, strict=True)]
        for v in versions
    }
    palette = [
        "tab:orange",
        "tab:green",
        "tab:blue",
        "tab:purple",
        "tab:brown",
        "tab:olive",
    ]
    colors = [
        "0.55" if v == NO_VERSION else palette[i % len(palette)]
        for i, v in enumerate(versions)
    ]

    fig, (ax_rps, ax_lat, ax_ver) = plt.subplots(
        3, 1, figsize=(12, 8.5), sharex=True, gridspec_kw={"height_ratios": [3, 2, 2]}
    )
    ax_rps.step(edges, steps(total), where="post", color="tab:blue", label="requests/s")
    ax_rps.bar(
        edges[:-1],
        errors,
        width=1.0,
        align="edge",
        color="tab:red",
        label=f"errors/s ({sum(errors)} in all)",
    )
    ax_rps.set_ylabel("requests/s")
    ax_rps.set_ylim(0, max(total) * 1.35 + 1)
    ax_lat.step(edges, steps(p99), where="post", color="tab:purple", label="p99")
    ax_lat.step(edges, steps(p50), where="post", color="tab:gray", label="p50")
    ax_lat.set_ylabel("latency (ms)")
    ax_lat.set_ylim(bottom=0)
    ax_ver.stackplot(
        edges,
        *[steps(share[v]) for v in versions],
        labels=[
            f"X-App-Version {v}" if v != NO_VERSION else "no X-App-Version (errors)"
            for v in versions
        ],
        colors=colors,
        step="post",
        alpha=0.85,
    )
    ax_ver.set_ylabel("share of traffic")
    ax_ver.set_ylim(0, 1)
    ax_ver.set_xlabel("seconds since the load started (1-second bins by request start)")
    mark_xs = [m["t"] - base for m in marks]
    ax_ver.set_xlim(min([0, *mark_xs]) - 0.2, max([nbins, *mark_xs]) + 0.5)

    starts = [m["t"] for m in marks if m["event"] == "rollout_start"]
    ends = [m["t"] for m in marks if m["event"] == "rollout_end"]
    if starts:
        span_end = ends[-1] if ends else marks[-1]["t"]
        for ax in (ax_rps, ax_lat, ax_ver):
            ax.axvspan(starts[0] - base, span_end - base, color="0.9", zorder=0)
    host_colors = {h: plt.cm.Dark2(i % 8) for i, h in enumerate(sorted(hosts))}
    style = {"drain": "--", "enabled": "-", "failed": ":"}
    # Marks closer than ~1.5 % of the axis share one label, so they do not print over
    # each other (a failed host is marked failed and enabled again within milliseconds).
    near = max(nbins, marks[-1]["t"] - base if marks else 0) * 0.015
    groups: list[list[tuple[float, str, str]]] = []
    for m in marks:
        x = m["t"] - base
        event, host = m["event"], m.get("host", "")
        if event in ("rollout_start", "rollout_end"):
            color, label, ls = "black", event.replace("_", " "), "-."
        elif event in style:
            color = "tab:red" if event == "failed" else host_colors.get(host, "black")
            label, ls = f"{host} {event}", style[event]
        else:
            color, label, ls = "0.5", f"{host} {event}".strip(), ":"
        for ax in (ax_rps, ax_lat, ax_ver):
            ax.axvline(x, color=color, linestyle=ls, linewidth=1.2)
        if groups and x - groups[-1][0][0] < near:
            groups[-1].append((x, label, color))
        else:
            groups.append([(x, label, color)])
    for group in groups:
        colors_here = {c for _, _, c in group}
        ax_rps.annotate(
            ", ".join(label for _, label, _ in group),
            (group[0][0], 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -3),
            textcoords="offset points",
            rotation=90,
            va="top",
            fontsize=8,
            color=colors_here.pop() if len(colors_here) == 1 else "black",
        )
    ax_rps.legend(loc="lower left", fontsize=8)
    ax_lat.legend(loc="upper left", fontsize=8)
    ax_ver.legend(loc="lower left", fontsize=8)
    for ax in (ax_rps, ax_lat, ax_ver):
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_report(args: argparse.Namespace) -> int:
    records = [
        r for r in read_jsonl(args.records, "records") if "t0" in r and "kind" in r
    ]
    if not records:
        die(f"{args.records} holds no request records")
    marks = load_marks(args.marks)
    starts = [m["t"] for m in marks if m["event"] == "rollout_start"]
    ends = [m["t"] for m in marks if m["event"] == "rollout_end"]
    start = starts[0] if starts else None
    end = ends[-1] if ends else None
    failed = [m for m in marks if m["event"] == "failed"]
    hosts = host_windows(marks)
    load = summarise(records)

    if start is not None:
        during = [r for r in records if start <= r["t0"] <= (end or load["end"])]
        load["during_rollout"] = {
            "requests": len(during),
            "failures": sum(not r["ok"] for r in during),
            "versions": dict(Counter(r.get("version") or NO_VERSION for r in during)),
        }
    wall = round(end - start, 2) if start is not None and end is not None else None
    rollout = {
        "start": start,
        "end": end,
        "wall_s": wall,
        "result": "failed" if failed else ("ok" if wall is not None else "unknown"),
        "failed_hosts": sorted({m.get("host", "?") for m in failed}),
    }
    host_report = {
        host: {
            "drain_to_enabled_s": e["drain_to_enabled_s"],
            "max_s": max(e["drain_to_enabled_s"], default=None),
            "failed": e["failed"],
            "left_drained": e["open"] is not None,
        }
        for host, e in sorted(hosts.items())
    }
    slowest = max(
        (h["max_s"] for h in host_report.values() if h["max_s"] is not None),
        default=None,
    )
    targets = {
        "zero_failures": {"value": load["failures"], "ok": load["failures"] == 0},
        "drain_to_enabled_max_s": {
            "limit": args.target_drain,
            "value": slowest,
            "ok": slowest is not None and slowest < args.target_drain,
        },
        "rollout_wall_s": {
            "limit": args.target_wall,
            "value": wall,
            "ok": wall is not None and wall < args.target_wall,
        },
    }

    violations = check_versions(args, records, start, end)
    if args.max_failures is not None and load["failures"] > args.max_failures:
        violations.append(
            f"{load['failures']} failed request(s), at most {args.max_failures} allowed: "
            + "; ".join(
                f"{k} x{n}" for k, n in list(load["failure_reasons"].items())[:5]
            )
        )
    if args.expect_stopped_at:
        stop_host = args.expect_stopped_at
        if stop_host not in rollout["failed_hosts"]:
            violations.append(
                f"expected the rollout to fail on {stop_host}, but the marks show failures "
                f"on {rollout['failed_hosts'] or 'no host'}"
            )
        touched = sorted(h for h in host_report if h != stop_host)
        if touched:
            violations.append(
                f"the rollout went on past {stop_host}: {', '.join(touched)} drained too"
            )
    for host, h in host_report.items():
        if h["left_drained"]:
            violations.append(f"{host} was drained and never enabled again")
    if args.enforce_targets:
        violations += [
            f"target {k} missed: {v}" for k, v in targets.items() if not v["ok"]
        ]

    stamp = datetime.fromtimestamp(start or load["start"], UTC).strftime(
        "%Y%m%dT%H%M%SZ"
    )
    name = f"rollout-{stamp}" + (f"-{args.tag}" if args.tag else "")
    args.reports_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.reports_dir / f"{name}.json"
    png_path = args.reports_dir / f"{name}.png"
    first_mark = next((m for m in marks if m["event"] == "rollout_start"), {})
    versions = "/".join(v for v in load["versions"] if v != NO_VERSION) or NO_VERSION
    if args.expect_versions:
        versions = " → ".join(args.expect_versions)
    title = (
        f"sprintpoints rollout {stamp} ({versions}): "
        + (f"{wall:.1f} s wall, " if wall is not None else "")
        + f"{load['requests']} requests, {load['failures']} failed, "
        + f"p99 {load['latency_ms']['p99']} ms"
        + (f" — FAILED on {', '.join(rollout['failed_hosts'])}" if failed else "")
    )
    plot(records, marks, hosts, title, png_path)

    report = {
        "name": name,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "records": str(args.records),
        "marks": str(args.marks) if args.marks else None,
        "rollout": rollout
        | {k: v for k, v in first_mark.items() if k not in ("t", "event", "host")},
        "hosts": host_report,
        "load": load,
        "targets": targets,
        "assertions": {
            "expect_versions": args.expect_versions,
            "expect_only_version": args.expect_only_version,
            "expect_stopped_at": args.expect_stopped_at,
            "max_failures": args.max_failures,
            "violations": violations,
            "ok": not violations,
        },
        "plot": png_path.name,
    }
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if not args.no_latest:
        shutil.copyfile(json_path, args.reports_dir / "rollout-latest.json")
        shutil.copyfile(png_path, args.reports_dir / "rollout-latest.png")

    hosts_txt = (
        " ".join(
            f"{h}={v['max_s']}s" if v["max_s"] is not None else f"{h}=never-enabled"
            for h, v in host_report.items()
        )
        or "-"
    )
    print(
        f"report: {json_path} {png_path.name} result={rollout['result']} wall_s={wall} "
        f"drain_to_enabled {hosts_txt} requests={load['requests']} "
        f"failures={load['failures']} rps={load['rps_mean']} "
        f"p50_ms={load['latency_ms']['p50']} p99_ms={load['latency_ms']['p99']} "
        f"versions={load['versions']}"
    )
    for violation in violations:
        print(f"VIOLATION {violation}")
    return 1 if violations else 0
