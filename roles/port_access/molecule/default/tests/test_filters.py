"""Unit tests of the role's filter plugin (run with the scenario's verify step)."""

import importlib.util
import pathlib

import pytest

_PATH = (
    pathlib.Path(__file__).resolve().parents[3] / "filter_plugins" / "port_access.py"
)
_SPEC = importlib.util.spec_from_file_location("port_access_filters", _PATH)
filters = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(filters)


@pytest.mark.parametrize(
    "source", ["10.0.0.5", "10.0.0.0/24", "0.0.0.0/0", "fd00::5", "fd00::/64", "::/0"]
)
def test_valid_sources(source):
    assert filters.port_access_invalid_sources([source]) == []


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("10.0.0.1/24", "has host bits set (the network is 10.0.0.0/24)"),
        ("fd00::1/64", "has host bits set (the network is fd00::/64)"),
        ("10.0.0.256", "is not an IPv4/IPv6 address or CIDR"),
        ("10.0.0.0/33", "is not an IPv4/IPv6 address or CIDR"),
        ("monitoring1", "is not an IPv4/IPv6 address or CIDR"),
        ("", "is not an IPv4/IPv6 address or CIDR"),
    ],
)
def test_invalid_sources(source, problem):
    assert filters.port_access_invalid_sources([source]) == [f"{source!r} {problem}"]


def test_networks_split_by_version_merged_and_sorted():
    sources = [
        "10.0.1.0/24",
        "192.0.2.7",
        "10.0.0.0/24",
        "10.0.0.9",
        "fd00::/64",
        "fd00::1",
    ]
    assert filters.port_access_networks(sources, 4) == ["10.0.0.0/23", "192.0.2.7"]
    assert filters.port_access_networks(sources, 6) == ["fd00::/64"]
    assert filters.port_access_networks([], 6) == []
