"""Unit tests of filter_plugins/app_service.py: the container plan and the secrets plan.

Run from the repository: `.venv/bin/pytest roles/app_service/tests`.
"""

import hashlib
import importlib.util
import pathlib

import pytest

SOURCE = pathlib.Path(__file__).parents[1] / "filter_plugins" / "app_service.py"
SPEC = importlib.util.spec_from_file_location("app_service_filters", SOURCE)
f = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(f)

BASE = "/etc/sprintpoints/secrets"
SERVICES = [
    {"name": "web", "port": 8001, "metrics_port": 8101, "replicas": 2,
     "secrets": {"DB_PASSWORD": "pw1", "INTERNAL_TOKEN": "tok"}},
    {"name": "registry", "port": 8003, "secrets": {"DB_PASSWORD": 12345}},
    {"name": "vendor-stub", "port": 8004},
]  # fmt: skip


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def entry(
    path, *, isdir=False, mode="0400", uid=10001, gid=10001, checksum=None, inode=1
):
    listing = {
        "path": f"{BASE}/{path}",
        "isdir": isdir,
        "mode": mode,
        "uid": uid,
        "gid": gid,
    }
    listing["inode"] = inode
    if checksum is not None:
        listing["checksum"] = checksum
    return listing


def test_every_replica_gets_a_name_and_consecutive_ports():
    assert f.containers(SERVICES) == [
        {"service": "web", "replica": 1, "slot": "a", "name": "sp-web", "port": 8001,
         "metrics_port": 8101},
        {"service": "web", "replica": 2, "slot": "a", "name": "sp-web-2", "port": 8002,
         "metrics_port": 8102},
        {"service": "registry", "replica": 1, "slot": "a", "name": "sp-registry", "port": 8003,
         "metrics_port": None},
        {"service": "vendor-stub", "replica": 1, "slot": "a", "name": "sp-vendor-stub",
         "port": 8004, "metrics_port": None},
    ]  # fmt: skip


def test_slot_b_adds_b_to_the_names_and_the_offset_to_every_port():
    assert f.containers(SERVICES[:1], slot="b", offset=10) == [
        {"service": "web", "replica": 1, "slot": "b", "name": "sp-web-b", "port": 8011,
         "metrics_port": 8111},
        {"service": "web", "replica": 2, "slot": "b", "name": "sp-web-b-2", "port": 8012,
         "metrics_port": 8112},
    ]  # fmt: skip
    # slot a is a deployment from before slots: same names and ports whatever the offset
    assert f.containers(SERVICES[:1], slot="a", offset=10)[0]["port"] == 8001


def test_an_unknown_slot_is_refused():
    with pytest.raises(ValueError, match="slot"):
        f.containers(SERVICES, slot="c")
    assert f.other_slot("a") == "b" and f.other_slot("b") == "a"


def running(name, slot=None, state="running"):
    labels = {"org.sprintpoints.service": "web"}
    if slot:
        labels["org.sprintpoints.slot"] = slot
    return {"Names": [f"/{name}"], "State": state, "Labels": labels}


def test_the_active_slot_is_the_one_whose_containers_run():
    assert f.active_slot([running("sp-web-b", "b")], SERVICES) == "b"
    assert (
        f.active_slot(
            [running("sp-web", "a"), running("sp-web-b", "b", "exited")], SERVICES
        )
        == "a"
    )
    # nothing running (a first deploy): slot a
    assert f.active_slot([running("sp-web-b", "b", "exited")], SERVICES) == "a"
    assert f.active_slot([], SERVICES) == "a"
    # a switch stopped half-way, both running: a (the caller drains the idle slot first)
    assert (
        f.active_slot([running("sp-web", "a"), running("sp-web-b", "b")], SERVICES)
        == "a"
    )


def test_a_slot_lists_its_containers_running_or_not_without_migration_runs():
    found = [
        running("sp-web", "a"),
        running("sp-web-b", "b", "exited"),
        running("sp-web-b-2"),  # no label: by name
        running("sp-web-migrate", "a", "exited"),
        running("sp-web-7"),  # a replica no longer planned: slot a by name
    ]
    assert f.slot_containers(found, SERVICES, "sp-", "b") == ["sp-web-b", "sp-web-b-2"]
    assert f.slot_containers(found, SERVICES, "sp-", "a") == ["sp-web", "sp-web-7"]


def test_containers_from_before_slots_count_by_name():
    assert f.active_slot([running("sp-web"), running("sp-web-2")], SERVICES) == "a"
    assert f.active_slot([running("sp-web-b-2")], SERVICES) == "b"


def test_the_prefix_names_every_container():
    assert f.container_names(SERVICES, "blue-") == [
        "blue-web",
        "blue-web-2",
        "blue-registry",
        "blue-vendor-stub",
    ]
    assert f.container_name("web", 3, "x-") == "x-web-3"
    assert f.container_name("web", 3, "x-", "b") == "x-web-b-3"


def test_an_offset_that_makes_the_slots_overlap_shows_as_a_repeated_port():
    ports = f.host_ports([{"name": "web", "port": 8001, "replicas": 2}], 1)
    assert ports == [8001, 8002, 8002, 8003]


def test_ports_as_strings_from_the_inventory_count_as_numbers():
    services = [
        {"name": "web", "port": "8001", "replicas": "2", "metrics_port": "8101"}
    ]
    assert f.host_ports(services, "10") == [
        8001,
        8101,
        8002,
        8102,
        8011,
        8111,
        8012,
        8112,
    ]


def test_host_ports_list_repeats_so_preflight_can_see_a_collision():
    services = [{"name": "a", "port": 8001, "replicas": 2}, {"name": "b", "port": 8002}]
    ports = f.host_ports(services, 10)
    assert ports == [8001, 8002, 8002, 8011, 8012, 8012]
    assert len(set(ports)) != len(ports)


def test_secret_files_name_service_and_secret():
    assert f.secret_files(SERVICES) == [
        "web/DB_PASSWORD",
        "web/INTERNAL_TOKEN",
        "registry/DB_PASSWORD",
    ]


def test_only_root_only_service_directories_count():
    found = [
        entry("web", isdir=True, mode="0700", uid=0, gid=0),
        entry("registry", isdir=True, mode="0755", uid=0, gid=0),  # too open
        entry("vendor-stub", isdir=True, mode="0700", uid=10001, gid=0),  # not root's
        entry("web/db_password", checksum=sha1("pw1")),  # a file, not a directory
    ]
    assert f.secret_dirs_ok(found, BASE) == ["web"]


def test_a_secret_file_is_in_place_only_with_its_owner_mode_and_content():
    found = [
        entry("web/db_password", checksum=sha1("pw1")),
        entry("web/internal_token", checksum=sha1("old value")),  # rotated: rewrite
        entry(
            "registry/db_password", checksum=sha1("12345"), mode="0644"
        ),  # wrong mode
    ]
    assert f.secret_files_ok(SERVICES, found, BASE, 10001, 10001) == ["web/DB_PASSWORD"]
    assert f.secret_files_ok(SERVICES, found, BASE, 0, 0) == []  # wrong owner


def test_a_non_string_secret_is_compared_as_the_text_written():
    found = [entry("registry/db_password", checksum=sha1("12345"))]
    assert f.secret_files_ok(SERVICES, found, BASE, 10001, 10001) == [
        "registry/DB_PASSWORD"
    ]


def test_secret_revisions_are_inode_numbers_new_or_none():
    found = [
        entry("web", isdir=True, mode="0700", uid=0, gid=0, inode=5),
        entry("web/db_password", inode=11),
        entry("web/internal_token", inode=12),
    ]
    assert f.secret_revs(SERVICES, found, BASE) == {
        "web": "11-12",
        "registry": "new",  # not written yet (check mode)
        "vendor-stub": "none",
    }


def test_the_filters_are_registered_under_the_role_prefix():
    names = f.FilterModule().filters()
    assert all(name.startswith("app_service_") for name in names)
    assert names["app_service_containers"] is f.containers


# The migration's own secrets: the owner's DB_PASSWORD, which the service never mounts.
MIGRATING = [
    {"name": "web", "port": 8001,
     "secrets": {"DB_PASSWORD": "app-pw", "INTERNAL_TOKEN": "tok"},
     "migrate_secrets": {"DB_PASSWORD": "owner-pw"}},
]  # fmt: skip


def test_a_migration_secret_is_a_file_of_its_own():
    assert f.secret_files(MIGRATING) == [
        "web/DB_PASSWORD",
        "web/INTERNAL_TOKEN",
        "web/MIGRATE__DB_PASSWORD",
    ]
    assert f.secret_value(MIGRATING, "web/DB_PASSWORD") == "app-pw"
    assert f.secret_value(MIGRATING, "web/MIGRATE__DB_PASSWORD") == "owner-pw"
    found = [entry("web/migrate__db_password", checksum=sha1("owner-pw"))]
    assert f.secret_files_ok(MIGRATING, found, BASE, 10001, 10001) == [
        "web/MIGRATE__DB_PASSWORD"
    ]


def test_the_service_never_mounts_its_migration_secret():
    mounts = f.secret_mounts(["DB_PASSWORD", "INTERNAL_TOKEN"], f"{BASE}/web")
    assert [(m["source"], m["target"]) for m in mounts] == [
        (f"{BASE}/web/db_password", "/run/secrets/db_password"),
        (f"{BASE}/web/internal_token", "/run/secrets/internal_token"),
    ]
    assert all(m["read_only"] and m["type"] == "bind" for m in mounts)


def test_the_migration_mounts_its_own_file_in_place_of_the_service_one():
    mounts = f.secret_mounts(
        ["DB_PASSWORD", "INTERNAL_TOKEN"], f"{BASE}/web", ["DB_PASSWORD"]
    )
    assert sorted((m["source"], m["target"]) for m in mounts) == [
        (f"{BASE}/web/internal_token", "/run/secrets/internal_token"),
        (f"{BASE}/web/migrate__db_password", "/run/secrets/db_password"),
    ]


def test_the_migration_secret_does_not_re_create_the_service_containers():
    found = [entry("web/db_password", inode=11), entry("web/internal_token", inode=12)]
    before = f.secret_revs(MIGRATING, found, BASE)
    found.append(entry("web/migrate__db_password", inode=13))
    assert f.secret_revs(MIGRATING, found, BASE) == before == {"web": "11-12"}
