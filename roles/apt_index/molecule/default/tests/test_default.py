"""apt_index: an emptied index with a fresh directory time is refreshed, never trusted."""

testinfra_hosts = ["apt-index-host"]


def test_package_lists_were_downloaded(host):
    lists = host.run(
        "find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*'"
    ).stdout.split()
    assert any("bookworm_main" in name for name in lists), lists


def test_a_package_not_installed_has_an_install_candidate(host):
    assert not host.package("haproxy").is_installed
    policy = host.check_output("apt-cache policy haproxy")
    assert "Candidate: (none)" not in policy
    assert "Candidate: 2.6" in policy, policy
