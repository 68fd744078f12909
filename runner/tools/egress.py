"""The one egress client for all outbound HTTP: scope-checked, SSRF-safe, size- and time-capped.

For every hop of a request (the first and each redirect) :class:`EgressClient`:

1. accepts only ``http``/``https`` URLs without credentials in them;
2. refuses cloud-metadata host names (``metadata.google.internal`` ...) whatever the policy says;
3. requires the host (and port) to match :attr:`EgressPolicy.allowed_hosts`;
4. resolves DNS **once** and checks **every** address: private, loopback (unless
   ``allow_loopback``), link-local, unspecified, multicast, reserved and other non-global
   addresses are refused, also when wrapped in IPv6 (mapped, 6to4, Teredo, NAT64); cloud
   metadata addresses are refused even with ``allow_loopback``;
5. connects to the checked address itself (the URL is rewritten to the IP; ``Host`` and TLS
   SNI/certificate checks keep the name), so a DNS answer that changes between check and
   connect (rebinding) cannot redirect the connection;
6. follows redirects itself, re-running 1-5 for each, dropping credentials when the origin
   changes;
7. streams the body and stops at ``max_response_bytes`` (``truncated=True``);
8. bounds the whole exchange, redirects and body included, by one deadline.

A process may also install one :class:`EgressGuard` (:func:`set_egress_guard`): it sees every hop
before the policy does, may refuse it (``EgressBlocked``) and may add headers. The rehearsal's worker
process installs one that pins all egress to the fault-injecting upstream (``runner.rehearsal``).

Allowed-host entries: ``api.example.com`` (exact), ``*.example.com`` (any subdomain, not the
apex), each optionally with ``:port``. An entry without a port allows only the scheme's
default port (80/443), so a tenant cannot reach other services on an allowed host by accident.

Errors::

    StepFailed (runner.errors)
    └── EgressBlocked   egress_blocked   category "scope": the URL or address is not allowed

Transport failures are ``StepFailed("dependency")`` with ``details["kind"]`` (``dns``,
``connect``, ``timeout``, ``protocol``, ``redirects``), ``details["retryable"]`` and
``details["sent"]`` (False only when the request cannot have reached the server).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field

from runner.errors import StepFailed
from tenants.kit.addresses import METADATA_ADDRESSES, METADATA_HOSTNAMES, check_address, parse_ip_host

__all__ = [
    "METADATA_ADDRESSES",
    "METADATA_HOSTNAMES",
    "EgressBlocked",
    "EgressClient",
    "EgressGuard",
    "EgressPolicy",
    "EgressResponse",
    "Resolver",
    "check_address",
    "display_url",
    "host_allowed",
    "set_egress_guard",
    "system_resolver",
]

Resolver = Callable[[str, int], list[str]]


class EgressGuard(Protocol):
    """A process-wide check of every outbound hop, ahead of the per-client policy (see the module docstring)."""

    def check(self, scheme: str, host: str, port: int, url: str) -> None:
        """Raise :class:`EgressBlocked` to refuse the hop (``url`` is the display URL, for messages)."""

    def headers(self) -> Mapping[str, str]:
        """Headers to add to the hop's request."""


_guard: EgressGuard | None = None


def set_egress_guard(guard: EgressGuard | None) -> None:
    """Install (or, with None, remove) this process's egress guard."""
    global _guard
    _guard = guard

_REDIRECTS = (301, 302, 303, 307, 308)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CREDENTIAL_HEADER_WORDS = ("auth", "cookie", "token", "secret", "key", "signature", "session")
_CHUNK = 64 * 1024


class EgressBlocked(StepFailed):
    """An outbound request was refused by the egress policy (category ``scope``)."""

    code = "egress_blocked"

    def __init__(self, reason: str, *, url: str = "", host: str = "") -> None:
        super().__init__("scope", reason, action="fail",
                         details={"url": url, "host": host, "retryable": False, "sent": False})


class EgressPolicy(BaseModel):
    """What an egress client may reach, and how much it may read and wait."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_hosts: list[str] = Field(default_factory=list)
    allow_loopback: bool = False
    max_response_bytes: int = Field(default=5_000_000, ge=1)
    timeout_s: float = Field(default=30.0, gt=0)
    max_redirects: int = Field(default=3, ge=0, le=10)


@dataclass(frozen=True, slots=True)
class EgressResponse:
    """A fully read (possibly truncated) response of the last hop."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str  # the final URL, with its host name (not the pinned IP)
    elapsed_ms: float
    truncated: bool
    method: str = "GET"
    ip: str = ""  # the address actually connected to for the last hop
    redirects: tuple[str, ...] = ()  # display URLs of the hops before the last one


@dataclass(slots=True)
class _Hop:
    """The mutable state of one request as it follows redirects."""

    method: str
    url: httpx.URL
    headers: httpx.Headers
    body: bytes | None
    budget: float
    deadline: float
    sent: bool = False  # a previous hop reached a server
    redirects: list[str] = field(default_factory=list)


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve ``host`` with ``socket.getaddrinfo``; the addresses in the order returned."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


def display_url(url: httpx.URL) -> str:
    """``scheme://host[:port]/path`` without query or fragment (they may hold keys or PII)."""
    return str(url.copy_with(query=None, fragment=None, username=None, password=None))


def _normalise_host(url: httpx.URL) -> str:
    return url.raw_host.decode("ascii").lower().rstrip(".")


def host_allowed(host: str, port: int, scheme: str, allowed_hosts: list[str]) -> bool:
    """Whether ``host:port`` matches an entry (``name``, ``*.domain``, optional ``:port``)."""
    for entry in allowed_hosts:
        pattern = entry.strip().lower()
        entry_port: int | None = None
        if pattern.startswith("["):  # [v6]:port
            close = pattern.find("]")
            rest = pattern[close + 1:]
            pattern = pattern[1:close]
            if rest.startswith(":") and rest[1:].isdigit():
                entry_port = int(rest[1:])
        elif pattern.count(":") == 1:
            name, _, port_text = pattern.partition(":")
            if not port_text.isdigit():
                continue
            pattern, entry_port = name, int(port_text)
        wanted_port = entry_port if entry_port is not None else _DEFAULT_PORTS[scheme]
        if port != wanted_port:
            continue
        pattern = pattern.rstrip(".")
        if pattern.startswith("*."):
            suffix = pattern[1:]  # ".example.com"
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif host == pattern:
            return True
    return False


class EgressClient:
    """Sends HTTP requests under an :class:`EgressPolicy` (see the module docstring).

    ``resolver(host, port)`` returns the host's addresses (default: ``getaddrinfo``);
    ``transport`` replaces the network (tests). Thread-safe; connections are not kept alive,
    so a connection opened for one host name is never reused for another on the same IP.
    """

    def __init__(self, policy: EgressPolicy, resolver: Resolver | None = None, *,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.policy = policy
        self._resolver: Resolver = resolver or system_resolver
        self._client = httpx.Client(
            transport=transport,
            trust_env=False,  # a proxy from the environment would bypass address pinning
            follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._client.close()

    def __enter__(self) -> EgressClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- checks ---------------------------------------------------------------------------------

    def _pin(self, url: httpx.URL) -> tuple[str, str]:
        """Check one hop's URL; return (host, ip to connect to). Raises EgressBlocked/StepFailed."""
        shown = display_url(url) if url.scheme in _DEFAULT_PORTS else str(url)[:200]
        if url.scheme not in _DEFAULT_PORTS:
            raise EgressBlocked(f"egress blocked: scheme {url.scheme!r} is not http/https", url=shown)
        if url.username or url.password:
            raise EgressBlocked("egress blocked: credentials in the URL are not allowed", url=shown)
        host = _normalise_host(url)
        if not host:
            raise EgressBlocked("egress blocked: the URL has no host", url=shown)
        port = url.port or _DEFAULT_PORTS[url.scheme]
        if _guard is not None:
            _guard.check(url.scheme, host, port, shown)
        if host in METADATA_HOSTNAMES:
            raise EgressBlocked(f"egress blocked: {host} is a cloud metadata service", url=shown, host=host)
        if not host_allowed(host, port, url.scheme, self.policy.allowed_hosts):
            raise EgressBlocked(
                f"egress blocked: {host}:{port} is not in the allowed hosts {self.policy.allowed_hosts}",
                url=shown, host=host)
        literal = parse_ip_host(host)
        if literal is not None and not literal[1]:  # 0177.0.0.1, 0x7f.1, 2130706433: parsers disagree on these
            raise EgressBlocked(f"egress blocked: {host} is the IP address {literal[0]} written in another form",
                                url=shown, host=host)
        addresses = [str(literal[0])] if literal is not None else self._resolve(host, port)
        for address in addresses:  # a name mixing public and internal addresses is refused outright
            why = check_address(address, allow_loopback=self.policy.allow_loopback)
            if why is not None:
                raise EgressBlocked(f"egress blocked: {host} resolves to {address}, {why}",
                                    url=shown, host=host)
        return host, addresses[0].split("%", 1)[0]

    def _resolve(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` once through the resolver; DNS failures are retryable dependency failures."""
        try:
            addresses = list(self._resolver(host, port))
        except OSError as exc:
            addresses, error = [], f"DNS resolution failed for {host}: {exc}"
        else:
            error = f"DNS resolution for {host} returned no address"
        if not addresses:
            raise StepFailed("dependency", error,
                             details={"kind": "dns", "host": host, "retryable": True, "sent": False})
        return addresses

    # -- requests -------------------------------------------------------------------------------

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                json: Any = None, content: bytes | None = None,
                timeout_s: float | None = None) -> EgressResponse:
        """Send a request and read its (capped) response, following allowed redirects.

        ``timeout_s`` (capped by the policy's) bounds the whole exchange. Raises EgressBlocked
        (scope) for a refused URL or address and StepFailed("dependency") for DNS, connection,
        timeout, protocol and redirect-loop failures. HTTP error statuses are returned, not raised.
        """
        budget = min(timeout_s, self.policy.timeout_s) if timeout_s is not None else self.policy.timeout_s
        started = time.monotonic()
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:  # e.g. "0177.0.0.1": an IPv4 address httpx will not read
            raise EgressBlocked(f"egress blocked: the URL is not valid ({exc})", url=url[:200]) from None
        hop = _Hop(method=method.upper(), url=parsed, headers=httpx.Headers(headers or {}),
                   body=content, budget=budget, deadline=started + budget)
        hop.headers.setdefault("User-Agent", "midwatch-egress")
        hop.headers.setdefault("Accept", "*/*")
        # Identity: a compressed body could expand far beyond the size cap within one chunk.
        hop.headers.setdefault("Accept-Encoding", "identity")
        if json is not None:
            hop.body = httpx.Request("POST", "http://x", json=json).content
            hop.headers.setdefault("Content-Type", "application/json")
        while True:
            ip, response = self._send(hop)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    self._follow(hop, response.status_code, location)
                    continue
                data, truncated = self._read(response, hop)
                return EgressResponse(
                    status=response.status_code, headers=response.headers, body=data, url=str(hop.url),
                    elapsed_ms=(time.monotonic() - started) * 1000, truncated=truncated, method=hop.method,
                    ip=ip, redirects=tuple(hop.redirects))
            finally:
                response.close()

    def _send(self, hop: _Hop) -> tuple[str, httpx.Response]:
        """Check and send one hop to its pinned address; return (ip, streaming response)."""
        host, ip = self._pin(hop.url)
        scheme = hop.url.scheme
        port = hop.url.port or _DEFAULT_PORTS[scheme]
        headers = httpx.Headers(hop.headers)
        shown_host = f"[{host}]" if ":" in host else host
        headers["Host"] = shown_host if port == _DEFAULT_PORTS[scheme] else f"{shown_host}:{port}"
        if _guard is not None:
            headers.update(_guard.headers())
        remaining = hop.deadline - time.monotonic()
        if remaining <= 0:
            raise self._timeout(hop, sent=hop.sent)
        extensions: dict[str, Any] = {"timeout": httpx.Timeout(remaining).as_dict()}
        if scheme == "https":
            extensions["sni_hostname"] = host  # TLS SNI and certificate checks use the name, not the IP
        request = httpx.Request(hop.method, hop.url.copy_with(host=ip), headers=headers,
                                content=hop.body, extensions=extensions)
        try:
            response = self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            unsent = isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
            raise self._timeout(hop, sent=hop.sent or not unsent) from exc
        except httpx.TransportError as exc:
            unsent = isinstance(exc, httpx.ConnectError)
            raise self._transport_error(hop, exc, sent=hop.sent or not unsent) from exc
        hop.sent = True
        return ip, response

    def _follow(self, hop: _Hop, status: int, location: str) -> None:
        """Point ``hop`` at the redirect target (checked by the next ``_send``)."""
        hop.redirects.append(display_url(hop.url))
        if len(hop.redirects) > self.policy.max_redirects:
            limit = self.policy.max_redirects
            raise StepFailed(
                "dependency", f"{hop.method} {hop.redirects[0]}: more than {limit} redirects",
                details={"kind": "redirects", "redirects": hop.redirects, "retryable": False, "sent": True})
        try:
            target = hop.url.join(location)
        except httpx.InvalidURL as exc:
            raise EgressBlocked(f"egress blocked: the redirect target is not a valid URL ({exc})",
                                url=display_url(hop.url)) from None
        if (target.scheme, target.host, target.port) != (hop.url.scheme, hop.url.host, hop.url.port):
            # Credentials meant for one origin must not be handed to another.
            for name in list(hop.headers.keys()):
                lowered = name.lower()
                if "idempotency" not in lowered and any(w in lowered for w in _CREDENTIAL_HEADER_WORDS):
                    del hop.headers[name]
        if (status == 303 and hop.method != "HEAD") or (status in (301, 302) and hop.method == "POST"):
            hop.method = "GET"
            hop.body = None
            for name in ("content-type", "content-length"):
                hop.headers.pop(name, None)
        hop.url = target

    def _read(self, response: httpx.Response, hop: _Hop) -> tuple[bytes, bool]:
        limit = self.policy.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes(_CHUNK):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    return b"".join(chunks)[:limit], True
                if time.monotonic() > hop.deadline:
                    raise self._timeout(hop, sent=True)
        except httpx.TimeoutException as exc:
            raise self._timeout(hop, sent=True) from exc
        except httpx.TransportError as exc:
            raise self._transport_error(hop, exc, sent=True, mid_body=True) from exc
        except httpx.DecodingError as exc:
            raise StepFailed("dependency", f"{hop.method} {display_url(hop.url)}: undecodable body ({exc})",
                             details={"kind": "protocol", "retryable": True, "sent": True}) from exc
        return b"".join(chunks), False

    @staticmethod
    def _timeout(hop: _Hop, *, sent: bool) -> StepFailed:
        return StepFailed("dependency", f"timeout after {hop.budget:g}s: {hop.method} {display_url(hop.url)}",
                          details={"kind": "timeout", "host": _normalise_host(hop.url), "retryable": True,
                                   "sent": sent})

    @staticmethod
    def _transport_error(hop: _Hop, exc: httpx.TransportError, *, sent: bool,
                         mid_body: bool = False) -> StepFailed:
        kind = "connect" if isinstance(exc, httpx.ConnectError) else "protocol"
        what = "connection lost mid-body (truncated response)" if mid_body else "connection error"
        detail = str(exc) or type(exc).__name__
        return StepFailed("dependency", f"{what}: {hop.method} {display_url(hop.url)}: {detail}",
                          details={"kind": kind, "host": _normalise_host(hop.url),
                                   "error": type(exc).__name__, "retryable": True, "sent": sent})
