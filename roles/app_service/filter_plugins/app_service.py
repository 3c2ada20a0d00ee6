"""Filters of the app_service role: the container plan and the secrets plan, computed in Python
(with unit tests in roles/app_service/tests) instead of string-building Jinja.

Services are the role's rendered ``app_service_services`` entries (name, port, replicas,
metrics_port, secrets, ...). Replica k (1-based) of a service publishes host port
``port + k - 1`` (and ``metrics_port + k - 1``) and is named ``<prefix><name>`` for k = 1,
``<prefix><name>-<k>`` after that.

Every host has two slots (blue/green): slot ``a`` is the plan above (the names and ports of a
deployment from before slots, so such a deployment *is* slot a), slot ``b`` adds ``-b`` to the
service name (``sp-web-b``, ``sp-web-b-2``) and ``offset`` to every host port. A rollout starts
the new version on the idle slot while the active one serves.
"""

from __future__ import annotations

import hashlib
import os.path


def _replica_count(service: dict) -> int:
    return int(service.get("replicas", 1) or 1)


SLOTS = ("a", "b")


def _check_slot(slot: str) -> str:
    if slot not in SLOTS:
        raise ValueError(f"slot must be one of {SLOTS}, got {slot!r}")
    return slot


def other_slot(slot: str) -> str:
    return "b" if _check_slot(slot) == "a" else "a"


def container_name(
    service: dict | str, replica: int, prefix: str = "sp-", slot: str = "a"
) -> str:
    """The container of one replica: sp-web, sp-web-2, ... (slot b: sp-web-b, sp-web-b-2)."""
    name = service["name"] if isinstance(service, dict) else service
    base = f"{prefix}{name}" if _check_slot(slot) == "a" else f"{prefix}{name}-b"
    return base if int(replica) == 1 else f"{base}-{int(replica)}"


def containers(
    services: list[dict], prefix: str = "sp-", slot: str = "a", offset: int = 0
) -> list[dict]:
    """One entry per container of a slot: service, replica, slot, name, host port, metrics
    port. Slot b's ports are slot a's plus offset."""
    shift = 0 if _check_slot(slot) == "a" else int(offset)
    out = []
    for service in services:
        for replica in range(1, _replica_count(service) + 1):
            metrics = service.get("metrics_port")
            out.append(
                {
                    "service": service["name"],
                    "replica": replica,
                    "slot": slot,
                    "name": container_name(service, replica, prefix, slot),
                    "port": int(service["port"]) + replica - 1 + shift,
                    "metrics_port": None
                    if metrics is None
                    else int(metrics) + replica - 1 + shift,
                }
            )
    return out


def container_names(
    services: list[dict], prefix: str = "sp-", slot: str = "a"
) -> list[str]:
    return [c["name"] for c in containers(services, prefix, slot)]


def host_ports(services: list[dict], offset: int) -> list[int]:
    """Every host port the containers of both slots publish, metrics ports included
    (preflight checks that none repeats)."""
    ports = []
    for slot in SLOTS:
        for c in containers(services, slot=slot, offset=offset):
            ports.append(c["port"])
            if c["metrics_port"] is not None:
                ports.append(c["metrics_port"])
    return ports


def _slot_of(container: dict, names_b: set[str]) -> str:
    labels = container.get("Labels") or {}
    slot = labels.get("org.sprintpoints.slot")
    if slot is None:  # a container from before slots: by name
        slot = "b" if _name(container) in names_b else "a"
    return slot


def _name(container: dict) -> str:
    return (container.get("Names") or ["?"])[0].lstrip("/")


def slot_containers(
    found: list[dict], services: list[dict], prefix: str, slot: str
) -> list[str]:
    """The names of the service containers of one slot (running or not, migration runs
    left out), from docker_host_info's container list (verbose: Names, State, Labels)."""
    names_b = set(container_names(services, prefix, "b"))
    return [
        _name(c)
        for c in found
        if _slot_of(c, names_b) == _check_slot(slot)
        and not _name(c).endswith("-migrate")
    ]


def active_slot(found: list[dict], services: list[dict], prefix: str = "sp-") -> str:
    """The slot a host serves from: the slot of its running service containers, by their
    org.sprintpoints.slot label or, for containers from before slots (no label), by name.
    None running: "a". Both running (a switch that stopped half-way): "a"; the caller drains
    the idle slot before touching it, so either answer is safe."""
    names_b = set(container_names(services, prefix, "b"))
    running = {
        _slot_of(c, names_b)
        for c in found
        if c.get("State") == "running" and not _name(c).endswith("-migrate")
    }
    return "b" if running == {"b"} else "a"


# A secret only the service's migration gets (migrate_secrets: the owner's database password,
# where the service itself logs in as a role that owns nothing) is the file migrate_<name>.
MIGRATE_FILE_PREFIX = "MIGRATE__"


def _secret_items(service: dict) -> dict[str, object]:
    """Every secret file of a service by its "<NAME>": the service's secrets, then its
    migration's own as "MIGRATE__<NAME>"."""
    items = dict(service.get("secrets") or {})
    for name, value in (service.get("migrate_secrets") or {}).items():
        items[MIGRATE_FILE_PREFIX + name] = value
    return items


def secret_files(services: list[dict]) -> list[str]:
    """One "<service>/<NAME>" per secret file of every service (its migration's included)."""
    return [f"{s['name']}/{name}" for s in services for name in _secret_items(s)]


def secret_value(services: list[dict], file: str) -> object:
    """The value to write for one "<service>/<NAME>" of secret_files."""
    service, name = file.split("/", 1)
    return _secret_items(next(s for s in services if s["name"] == service))[name]


def secret_mounts(
    names: list[str], secret_dir: str, migrate_names: list[str] = ()
) -> list[dict]:
    """Read-only bind mounts of a service's secret files at /run/secrets/<name in lower case>;
    for its migration (migrate_names given), its own files in place of or besides those."""
    mounts = []
    for name in [n for n in names if n not in migrate_names] + list(migrate_names):
        file = (MIGRATE_FILE_PREFIX + name if name in migrate_names else name).lower()
        mounts.append(
            {
                "type": "bind",
                "read_only": True,
                "source": f"{secret_dir}/{file}",
                "target": f"/run/secrets/{name.lower()}",
            }
        )
    return mounts


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
        for name, value in _secret_items(service).items():
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
            "app_service_active_slot": active_slot,
            "app_service_other_slot": other_slot,
            "app_service_slot_containers": slot_containers,
            "app_service_secret_files": secret_files,
            "app_service_secret_value": secret_value,
            "app_service_secret_mounts": secret_mounts,
            "app_service_secret_dirs_ok": secret_dirs_ok,
            "app_service_secret_files_ok": secret_files_ok,
            "app_service_secret_revs": secret_revs,
        }
