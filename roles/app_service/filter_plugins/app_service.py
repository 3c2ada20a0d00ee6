"""Filters of the app_service role: the container plan and the secrets plan, computed in Python
(with unit tests in roles/app_service/tests) instead of string-building Jinja.

Services are the role's rendered ``app_service_services`` entries (name, port, replicas,
metrics_port, secrets, ...). Replica k (1-based) of a service publishes host port
``port + k - 1`` (and ``metrics_port + k - 1``) and is named ``<prefix><name>`` for k = 1,
``<prefix><name>-<k>`` after that.
"""

from __future__ import annotations

import hashlib
import os.path


def _replica_count(service: dict) -> int:
    return int(service.get("replicas", 1) or 1)


def container_name(service: dict | str, replica: int, prefix: str = "sp-") -> str:
    """The container of one replica: sp-web, sp-web-2, ..."""
    name = service["name"] if isinstance(service, dict) else service
    return f"{prefix}{name}" if int(replica) == 1 else f"{prefix}{name}-{int(replica)}"


def containers(services: list[dict], prefix: str = "sp-") -> list[dict]:
    """One entry per container a host runs: service, replica, name, host port, metrics port."""
    out = []
    for service in services:
        for replica in range(1, _replica_count(service) + 1):
            metrics = service.get("metrics_port")
            out.append(
                {
                    "service": service["name"],
                    "replica": replica,
                    "name": container_name(service, replica, prefix),
                    "port": int(service["port"]) + replica - 1,
                    "metrics_port": None
                    if metrics is None
                    else int(metrics) + replica - 1,
                }
            )
    return out


def container_names(services: list[dict], prefix: str = "sp-") -> list[str]:
    return [c["name"] for c in containers(services, prefix)]


def host_ports(services: list[dict]) -> list[int]:
    """Every host port the containers publish, metrics ports included (preflight checks that
    none repeats)."""
    ports = []
    for c in containers(services):
        ports.append(c["port"])
        if c["metrics_port"] is not None:
            ports.append(c["metrics_port"])
    return ports


def secret_files(services: list[dict]) -> list[str]:
    """One "<service>/<NAME>" per secret of every service."""
    return [
        f"{s['name']}/{name}" for s in services for name in (s.get("secrets") or {})
    ]


def _relative(files: list[dict], base_dir: str) -> dict[str, dict]:
    return {os.path.relpath(f["path"], base_dir): f for f in files}


def secret_dirs_ok(found: list[dict], base_dir: str) -> list[str]:
    """The services whose secrets directory exists root-only (0700, root:root), from a
    `find` listing of base_dir."""
    return [
        path
        for path, f in _relative(found, base_dir).items()
        if "/" not in path
        and f.get("isdir")
        and f.get("mode") == "0700"
        and int(f.get("uid", -1)) == 0
        and int(f.get("gid", -1)) == 0
    ]


def secret_files_ok(
    services: list[dict], found: list[dict], base_dir: str, uid: int, gid: int
) -> list[str]:
    """The "<service>/<NAME>" secret files already in place: a regular file named after the
    secret in lower case, owned uid:gid, mode 0400, with the value's content (by checksum)."""
    listing = _relative(found, base_dir)
    ok = []
    for service in services:
        for name, value in (service.get("secrets") or {}).items():
            f = listing.get(f"{service['name']}/{name.lower()}")
            if (
                f is not None
                and not f.get("isdir")
                and f.get("mode") == "0400"
                and int(f.get("uid", -1)) == int(uid)
                and int(f.get("gid", -1)) == int(gid)
                # sha1: what `find` returns as the checksum (a comparison, not a protection)
                and f.get("checksum") == hashlib.sha1(str(value).encode()).hexdigest()
            ):
                ok.append(f"{service['name']}/{name}")
    return ok


def secret_revs(
    services: list[dict], found: list[dict], base_dir: str
) -> dict[str, str]:
    """Per service, the inode numbers of its secret files joined by "-" ("new" for a file not
    written yet, in check mode; "none" for a service without secrets): a rotated secret is a
    new file, so the containers are re-created without anything derived from the value."""
    inodes = {path: f.get("inode") for path, f in _relative(found, base_dir).items()}
    revs = {}
    for service in services:
        names = list(service.get("secrets") or {})
        revs[service["name"]] = (
            "-".join(
                str(inodes.get(f"{service['name']}/{n.lower()}") or "new")
                for n in names
            )
            if names
            else "none"
        )
    return revs


class FilterModule:
    def filters(self):
        return {
            "app_service_containers": containers,
            "app_service_container_names": container_names,
            "app_service_container_name": container_name,
            "app_service_host_ports": host_ports,
            "app_service_secret_files": secret_files,
            "app_service_secret_dirs_ok": secret_dirs_ok,
            "app_service_secret_files_ok": secret_files_ok,
            "app_service_secret_revs": secret_revs,
        }
