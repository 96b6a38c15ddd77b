"""The SSRF guard every HTTP channel connects through.

A webhook URL or a push endpoint is chosen by someone outside the operator's trust (an app, a browser), so
it must not reach the operator's own network. The rules, checked at send time (a name that resolved to a public
address at registration may resolve to 127.0.0.1 now):

- the host is resolved with the event loop's ``getaddrinfo``; EVERY address it resolves to must be allowed,
  else the request is refused (:class:`EgressRefused`) -- mixing a public and a private answer does not help;
- refused: loopback, private (RFC 1918, fc00::/7), link-local (169.254/16, fe80::/10), multicast, unspecified,
  reserved, shared address space (100.64/10), the cloud metadata addresses (169.254.169.254, fd00:ec2::254),
  any other non-global address, and the IPv4-mapped IPv6 form (::ffff:a.b.c.d) of any of those;
- unless the allow-list (CIDRs; setting ``TIDINGS_EGRESS_ALLOW``, e.g. ``127.0.0.1/32,::1/128``) names it;
- the connection goes to the checked address itself (pinned: the URL's host is replaced by the IP, with the
  ``Host`` header and TLS SNI/certificate check still on the name), so there is no second resolution between
  check and connect; no proxy from the environment is used;
- redirects are never followed (a 3xx is the caller's answer); the response body is read up to
  ``max_body`` bytes (the rest is dropped); every phase has a timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx

from tidings.channels.base import Outcome, bounded

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SHARED_SPACE = ipaddress.ip_network("100.64.0.0/10")
METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
MAX_BODY = 64 * 1024


class EgressRefused(Exception):
    """The target's address is not one Tidings may connect to. The message names the host, never a secret."""


class Unresolvable(EgressRefused):
    """The host name did not resolve now (perhaps a passing DNS failure: the channels answer ``retry``)."""


def forbidden(ip: IPAddress) -> bool:
    """True when ``ip`` is not a public unicast address (see the module docstring for the list)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return forbidden(ip.ipv4_mapped)
    if ip in METADATA:
        return True
    if isinstance(ip, ipaddress.IPv4Address) and ip in SHARED_SPACE:
        return True
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or not ip.is_global
    )


def parse_allow(text: str) -> tuple[IPNetwork, ...]:
    """The allow-list from its setting: comma-separated CIDRs (a bare address means just it)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def permitted(ip: IPAddress, allow: Iterable[IPNetwork] = ()) -> bool:
    """True when Tidings may connect to ``ip``: public, or named by the allow-list."""
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    if any(c.version == net.version and c in net for c in candidates for net in allow):
        return True
    return not forbidden(ip)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Where and how the HTTP channels may connect."""

    allow: tuple[IPNetwork, ...] = ()
    connect_timeout: float = 5.0
    timeout: float = 15.0  # per read or write
    deadline: float = 30.0  # the whole request, so a server dripping its answer cannot hold a sender
    max_body: int = MAX_BODY

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EgressPolicy:
        env = os.environ if environ is None else environ
        return cls(allow=parse_allow(env.get("TIDINGS_EGRESS_ALLOW", "")))


async def resolve(host: str, port: int, policy: EgressPolicy) -> IPAddress:
    """The address to connect to for ``host``: the first it resolves to, once every one is checked."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unresolvable(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise EgressRefused(f"{host!r} resolves to no address")
    for ip in addresses:
        if not permitted(ip, policy.allow):
            raise EgressRefused(f"{host!r} resolves to {ip}, a non-public address")
    return addresses[0]


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks the host's addresses and connects to the checked one (see module doc).

    The connection pool keys on the (rewritten) IP, so HTTPS gets one pool per host name: a TLS connection whose
    certificate was checked for one name is never reused for another name that resolves to the same address.
    At most ``MAX_TLS_POOLS`` are kept; the least recently used is closed (a request in flight on it fails, and
    its channel answers ``retry``).
    """

    MAX_TLS_POOLS = 128

    def __init__(self, policy: EgressPolicy, verify: bool | ssl.SSLContext = True) -> None:
        self._policy = policy
        self._verify = verify
        self._plain = self._transport()
        self._tls: OrderedDict[str, httpx.AsyncHTTPTransport] = OrderedDict()

    def _transport(self) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(verify=self._verify, trust_env=False, retries=0)

    async def _tls_pool(self, host: str) -> httpx.AsyncHTTPTransport:
        pool = self._tls.pop(host, None) or self._transport()
        self._tls[host] = pool
        while len(self._tls) > self.MAX_TLS_POOLS:
            _, oldest = self._tls.popitem(last=False)
            await oldest.aclose()
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        ip = await resolve(host, port, self._policy)
        request.url = url.copy_with(host=str(ip))
        request.headers["Host"] = url.netloc.decode("ascii")
        if url.scheme != "https":
            return await self._plain.handle_async_request(request)
        request.extensions = {**request.extensions, "sni_hostname": host}
        return await (await self._tls_pool(host)).handle_async_request(request)

    async def aclose(self) -> None:
        await self._plain.aclose()
        for pool in self._tls.values():
            await pool.aclose()
        self._tls.clear()


@dataclass(frozen=True, slots=True)
class Reply:
    """A provider's answer: status, headers and at most ``max_body`` bytes of body."""

    status: int
    headers: httpx.Headers
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Egress:
    """A guarded HTTP client: one per channel, closed with it."""

    def __init__(self, policy: EgressPolicy | None = None, verify: bool | ssl.SSLContext = True) -> None:
        self.policy = policy or EgressPolicy.from_env()
        timeout = httpx.Timeout(self.policy.timeout, connect=self.policy.connect_timeout)
        self._client = httpx.AsyncClient(
            transport=PinnedTransport(self.policy, verify=verify),
            follow_redirects=False,
            timeout=timeout,
            trust_env=False,
        )

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, content: bytes = b""
    ) -> Reply:
        """Send one request; raises :class:`EgressRefused` for a refused address, ``httpx.HTTPError`` for
        network failures and timeouts. A URL that is not http(s) is refused."""
        if not url.startswith(("https://", "http://")):
            raise EgressRefused("only http and https URLs are allowed")
        try:
            async with asyncio.timeout(self.policy.deadline):
                return await self._exchange(method, url, headers, content)
        except TimeoutError:
            raise httpx.ReadTimeout(f"no complete answer within {self.policy.deadline:g} s") from None

    async def _exchange(
        self, method: str, url: str, headers: Mapping[str, str] | None, content: bytes
    ) -> Reply:
        async with self._client.stream(method, url, headers=headers, content=content) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk[: self.policy.max_body - len(body)]
                if len(body) >= self.policy.max_body:
                    break
            return Reply(response.status_code, response.headers, bytes(body))

    async def close(self) -> None:
        await self._client.aclose()


async def attempt(
    egress: Egress,
    url: str,
    *,
    headers: Mapping[str, str],
    content: bytes,
    secrets: tuple[str, ...] = (),
) -> Reply | Outcome:
    """POST through ``egress``: the Reply, or the Outcome when no answer came -- a refused address is
    ``failed`` (it will not become public by retrying soon), a name that does not resolve, a network error or a
    timeout is ``retry``."""
    try:
        return await egress.request("POST", url, headers=headers, content=content)
    except Unresolvable as exc:
        return Outcome("retry", detail=bounded(str(exc), secrets))
    except EgressRefused as exc:
        return Outcome("failed", detail=bounded(f"refused: {exc}", secrets))
    except httpx.HTTPError as exc:
        return Outcome("retry", detail=bounded(f"{type(exc).__name__}: {exc}", secrets))


def reply_detail(reply: Reply, secrets: tuple[str, ...] = ()) -> str:
    """The provider's answer for ``Outcome.detail``: status and the start of the body, masked and bounded."""
    return bounded(f"HTTP {reply.status}: {reply.text()}", secrets)
