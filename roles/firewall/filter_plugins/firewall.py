"""Filters of the firewall role: check sources and ports, shape them into nftables set elements,
and tell whether an address is admitted (the lockout guard).

Python's ipaddress module does the parsing (no netaddr on the control node), so IPv6 forms and
CIDRs with host bits set are judged exactly, which a Jinja regex cannot do.
"""

import ipaddress


def _network(source):
    return ipaddress.ip_network(str(source).strip(), strict=True)


def firewall_invalid_sources(sources):
    """One explanation per entry that is not an IPv4/IPv6 address or CIDR (empty: all valid)."""
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


def firewall_rule_problems(rules):
    """One explanation per rule of firewall_rules that cannot be loaded (empty: all valid)."""
    problems = []
    for number, rule in enumerate(rules, start=1):
        name = rule.get("name") if isinstance(rule, dict) else None
        where = f"firewall_rules[{number - 1}] ({name or 'no name'})"
        if not isinstance(rule, dict) or not name:
            problems.append(f"{where}: every rule needs a name, ports and sources")
            continue
        if not str(name).replace("_", "").replace("-", "").isalnum():
            problems.append(
                f"{where}: the name may hold letters, digits, '-' and '_' only"
            )
        ports = rule.get("ports") or []
        if not ports or not all(
            str(p).isdigit() and 1 <= int(p) <= 65535 for p in ports
        ):
            problems.append(f"{where}: ports must list ports 1-65535, got {ports!r}")
        if rule.get("proto", "tcp") not in ("tcp", "udp"):
            problems.append(
                f"{where}: proto must be tcp or udp, got {rule.get('proto')!r}"
            )
        sources = rule.get("sources")
        if sources is None:
            problems.append(
                f"{where}: sources is required (an empty list opens the ports to no one)"
            )
        else:
            problems += [f"{where}: {p}" for p in firewall_invalid_sources(sources)]
    return problems


def firewall_networks(sources, version):
    """The sources of one IP version, merged where they overlap, as nftables set elements."""
    networks = [net for net in map(_network, sources) if net.version == int(version)]
    return [
        str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        for net in ipaddress.collapse_addresses(networks)
    ]


def firewall_admits(sources, address):
    """Whether an address (the control node's, as this host sees it) is within the sources."""
    try:
        ip = ipaddress.ip_address(str(address).strip())
    except ValueError:
        return False
    return any(ip in _network(source) for source in sources)


class FilterModule:
    """firewall filters."""

    def filters(self):
        return {
            "firewall_invalid_sources": firewall_invalid_sources,
            "firewall_rule_problems": firewall_rule_problems,
            "firewall_networks": firewall_networks,
            "firewall_admits": firewall_admits,
        }
