"""Unit tests of filter_plugins/app_service.py: the container plan and the secrets plan.

Run from the repository: `.venv/bin/pytest roles/app_service/tests`.
"""

import hashlib
import importlib.util
import pathlib

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
        {"service": "web", "replica": 1, "name": "sp-web", "port": 8001, "metrics_port": 8101},
        {"service": "web", "replica": 2, "name": "sp-web-2", "port": 8002, "metrics_port": 8102},
        {"service": "registry", "replica": 1, "name": "sp-registry", "port": 8003,
         "metrics_port": None},
        {"service": "vendor-stub", "replica": 1, "name": "sp-vendor-stub", "port": 8004,
         "metrics_port": None},
    ]  # fmt: skip


def test_the_prefix_names_every_container():
    assert f.container_names(SERVICES, "blue-") == [
        "blue-web",
        "blue-web-2",
        "blue-registry",
        "blue-vendor-stub",
    ]
    assert f.container_name("web", 3, "x-") == "x-web-3"


def test_ports_as_strings_from_the_inventory_count_as_numbers():
    services = [
        {"name": "web", "port": "8001", "replicas": "2", "metrics_port": "8101"}
    ]
    assert f.host_ports(services) == [8001, 8101, 8002, 8102]


def test_host_ports_list_repeats_so_preflight_can_see_a_collision():
    services = [{"name": "a", "port": 8001, "replicas": 2}, {"name": "b", "port": 8002}]
    ports = f.host_ports(services)
    assert ports == [8001, 8002, 8002]
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
