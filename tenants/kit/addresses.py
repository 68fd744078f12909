"""Which hosts a tenant may point Midwatch at: one definition for upload-time checks and the egress client.

Host forms that different parsers read differently are an SSRF tool: ``0177.0.0.1`` (octal),
``0x7f.1`` (hex, short form), ``2130706433`` (one decimal integer) and ``127.1`` all mean
127.0.0.1 to ``inet_aton`` (and so to ``getaddrinfo`` and many HTTP clients) but look like names
or invalid addresses to others. :func:`parse_ip_host` reads every such form; a literal address
that is not written in its canonical form is refused outright (:func:`check_host`), whatever it
points at, so what a check sees is what a connection reaches.

- :func:`check_address`: why an IP address must not be connected to (metadata always; loopback
  unless allowed; private, link-local, reserved...; IPv6 forms embedding IPv4 judged by the IPv4).
- :func:`check_host`: the same for a URL's host as written (a name or a literal in any form), at
  upload time: names cannot be judged until they are resolved (the egress client does that at
  every call), except local and cloud-metadata names.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "LOCAL_HOSTNAMES",
    "METADATA_ADDRESSES",
    "METADATA_HOSTNAMES",
    "IpAddress",
    "check_address",
    "check_host",
    "parse_ip_host",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_HOSTNAMES = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "metadata.azure.com",
    "instance-data", "instance-data.ec2.internal", "metadata.platformequinix.com",
})
"""Cloud metadata service names, refused even when an allowed-host pattern would match them."""

METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
    "169.254.170.2",    # AWS ECS task metadata
    "169.254.169.253",  # AWS DNS resolver
    "169.254.169.123",  # AWS time sync
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",      # Oracle Cloud (legacy)
    "fd00:ec2::254",    # AWS IMDS over IPv6
    "fd00:ec2::23",     # AWS DNS over IPv6
))
"""Cloud metadata addresses, refused even when loopback is allowed."""

LOCAL_HOSTNAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LEGACY_PART = re.compile(r"^(?:0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``inet_aton``'s reading of ``host``: 1-4 dot-separated parts, each decimal, 0-octal or 0x-hex."""
    parts = host.split(".")
    if parts and parts[-1] == "":
        parts = parts[:-1]  # a trailing dot
    if not 1 <= len(parts) <= 4 or not all(_LEGACY_PART.match(p) for p in parts):
        return None
    values = []
    for part in parts:
        if part[:2].lower() == "0x":
            values.append(int(part[2:] or "0", 16))
        elif part.startswith("0") and len(part) > 1:
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for v in head:
        number = number * 256 + v
    number = number * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(number)


def parse_ip_host(host: str) -> tuple[IpAddress, bool] | None:
    """``(address, canonical)`` when ``host`` is an IP literal in any form a resolver accepts, else None.

    ``canonical`` is False for forms such as ``0177.0.0.1``, ``0x7f.1``, ``2130706433`` or ``127.1``.
    Brackets around an IPv6 literal and an IPv6 zone (``%eth0``) are accepted.
    """
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        legacy = _legacy_ipv4(text)
        return None if legacy is None else (legacy, False)
    return address, str(address) == text.split("%", 1)[0] or address.version == 6


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def check_address(address: str, *, allow_loopback: bool = False) -> str | None:
    """Why ``address`` (an IP address in canonical form) must not be connected to, or None when it is public.

    Metadata addresses are refused whatever ``allow_loopback`` says; IPv6 forms that embed an
    IPv4 address are judged by the embedded address.
    """
    try:
        addr: IpAddress = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(addr, ipaddress.IPv6Address):
        if addr in METADATA_ADDRESSES:
            return "a cloud metadata address"
        embedded = _embedded_ipv4(addr)
        if embedded is not None:
            inner = check_address(str(embedded), allow_loopback=allow_loopback)
            return None if inner is None else f"{inner} (embedded in IPv6 {addr})"
    if addr.is_loopback and allow_loopback and addr not in METADATA_ADDRESSES:
        return None  # ::1 also counts as "reserved" (::/8): loopback is loopback, in either family
    checks: list[tuple[bool, str]] = [
        (addr in METADATA_ADDRESSES, "a cloud metadata address"),
        (addr.is_loopback and not allow_loopback, "a loopback address"),
        (addr.is_link_local, "a link-local address"),
        (addr.is_unspecified or (addr.version == 4 and addr in ipaddress.ip_network("0.0.0.0/8")),
         "an unspecified address"),
        (addr.is_multicast, "a multicast address"),
        (addr.is_private and not addr.is_loopback, "a private address"),
        (addr.is_reserved, "a reserved address"),
        (not addr.is_global and not addr.is_loopback, "not a globally routable address"),
    ]
    for failed, why in checks:
        if failed:
            return why
    return None


def check_host(host: str, *, allow_loopback: bool = False) -> str | None:
    """Why a URL's host (as written, without port) must not be used, or None when it may be.

    Refused: a literal address :func:`check_address` refuses; a literal written in a
    non-canonical form (whatever it points at: parsers disagree about them); a local name
    (``localhost``, ``*.localhost``) unless ``allow_loopback``; a cloud metadata name always.
    Other names are judged when they are resolved, at every call.
    """
    name = host.strip().lower().rstrip(".")
    parsed = parse_ip_host(name)
    if parsed is not None:
        address, canonical = parsed
        if not canonical:
            why = check_address(str(address), allow_loopback=allow_loopback)
            what = f", {why}" if why else ""
            return f"{host} is the IP address {address}{what} written in another form; write it as {address}"
        why = check_address(str(address), allow_loopback=allow_loopback)
        return None if why is None else f"{host} is {why}"
    if name in METADATA_HOSTNAMES:
        return f"{host} is a cloud metadata service"
    if (name in LOCAL_HOSTNAMES or name.endswith(".localhost")) and not allow_loopback:
        return f"{host} is a local name (loopback)"
    return None
