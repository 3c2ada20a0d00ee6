"""Filters of the port_access role: check source addresses and shape them into nftables set elements.

Python's ipaddress module does the parsing (no netaddr on the control node), so IPv6 forms and CIDRs with
host bits set are judged exactly, which a Jinja regex cannot do.
"""

import ipaddress


def _network(source):
    return ipaddress.ip_network(str(source).strip(), strict=True)


def port_access_invalid_sources(sources):
    """Return one explanation per entry that is not an IPv4/IPv6 address or CIDR (empty list: all valid)."""
    problems = []
    for source in sources:
        try:
            _network(source)
        except ValueError:
            try:
                hint = ipaddress.ip_network(str(source).strip(), strict=False)
            except ValueError:
                problems.append(f"{source!r} is not an IPv4/IPv6 address or CIDR")
            else:
                problems.append(f"{source!r} has host bits set (the network is {hint})")
    return problems


def port_access_networks(sources, version):
    """The sources of one IP version, merged where they overlap, as nftables set elements (sorted, stable)."""
    networks = [net for net in map(_network, sources) if net.version == int(version)]
    return [
        str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        for net in ipaddress.collapse_addresses(networks)
    ]


class FilterModule:
    """port_access filters."""

    def filters(self):
        return {
            "port_access_invalid_sources": port_access_invalid_sources,
            "port_access_networks": port_access_networks,
        }
