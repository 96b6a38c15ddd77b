"""The SSRF guard: address rules (unit and property tests) and a real guarded client against local servers."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from tidings.channels.egress import Egress, EgressPolicy, EgressRefused, forbidden, parse_allow, permitted

from .fcm_service import self_signed
from .servers import serve

REFUSED = [
    "127.0.0.1",
    "127.8.9.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "169.254.1.1",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "224.0.0.1",
    "::1",
    "::",
    "fc00::1",
    "fd00:ec2::254",
    "fe80::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert forbidden(ip)
    assert not permitted(ip)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_permitted(address: str) -> None:
    assert permitted(ipaddress.ip_address(address))


def test_allow_list_names_exceptions() -> None:
    allow = parse_allow("127.0.0.1/32, ::1/128,10.0.0.0/8")
    assert permitted(ipaddress.ip_address("127.0.0.1"), allow)
    assert permitted(ipaddress.ip_address("::1"), allow)
    assert permitted(ipaddress.ip_address("10.200.0.1"), allow)
    assert permitted(ipaddress.ip_address("::ffff:127.0.0.1"), allow)
    assert not permitted(ipaddress.ip_address("127.0.0.2"), allow)
    assert not permitted(ipaddress.ip_address("169.254.169.254"), allow)
    assert EgressPolicy.from_env({"TIDINGS_EGRESS_ALLOW": "127.0.0.1/32"}).allow == allow[:1]


@given(st.ip_addresses(v=4))
def test_mapped_v6_is_judged_as_its_v4(ip: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
    assert forbidden(mapped) == forbidden(ip)


@given(st.ip_addresses(network="10.0.0.0/8") | st.ip_addresses(network="192.168.0.0/16"))
def test_private_ranges_always_refused(ip: ipaddress.IPv4Address) -> None:
    assert forbidden(ip)


@given(st.ip_addresses(network="100.64.0.0/10") | st.ip_addresses(network="fe80::/10"))
def test_shared_and_link_local_always_refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert forbidden(ip)


@given(st.ip_addresses())
def test_allowed_means_global(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    if permitted(ip):
        assert ip.is_global
        assert not ip.is_multicast


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9/x",
        "http://localhost:9/x",
        "ftp://example.invalid/x",
    ],
)
async def test_client_refuses_before_connecting(url: str) -> None:
    egress = Egress(EgressPolicy())
    try:
        with pytest.raises(EgressRefused):
            await egress.request("POST", url, content=b"{}")
    finally:
        await egress.close()


async def test_localhost_name_is_refused_even_when_serving() -> None:
    async with serve(ok) as (base, seen):
        egress = Egress(EgressPolicy())
        try:
            with pytest.raises(EgressRefused, match="non-public"):
                await egress.request("GET", base.replace("127.0.0.1", "localhost"))
        finally:
            await egress.close()
    assert seen.requests == []


async def test_allowed_name_connects_to_the_checked_address_with_its_host_header() -> None:
    async with serve(ok) as (base, seen):
        egress = Egress(EgressPolicy(allow=parse_allow("127.0.0.1/32,::1/128")))
        try:
            reply = await egress.request("GET", base.replace("127.0.0.1", "localhost") + "/p")
        finally:
            await egress.close()
    assert reply.status == 200
    assert reply.body == b"ok"
    assert seen.requests[0][2]["Host"].startswith("localhost:")


async def test_redirects_are_not_followed() -> None:
    async with serve(ok) as (inner, inner_seen):

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(inner + "/secret")

        async with serve(redirect) as (outer, _):
            egress = Egress(EgressPolicy(allow=parse_allow("127.0.0.1/32")))
            try:
                reply = await egress.request("POST", outer + "/hook", content=b"{}")
            finally:
                await egress.close()
    assert reply.status == 302
    assert inner_seen.requests == []


async def test_response_body_is_bounded() -> None:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 500_000)

    async with serve(big) as (base, _):
        egress = Egress(EgressPolicy(allow=parse_allow("127.0.0.1/32"), max_body=1024))
        try:
            reply = await egress.request("GET", base)
        finally:
            await egress.close()
    assert reply.status == 200
    assert len(reply.body) == 1024


async def test_timeouts_raise_http_errors() -> None:
    import asyncio

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(text="late")

    async with serve(slow) as (base, _):
        egress = Egress(EgressPolicy(allow=parse_allow("127.0.0.1/32"), timeout=0.2))
        try:
            with pytest.raises(httpx.TimeoutException):
                await egress.request("GET", base)
        finally:
            await egress.close()


def has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_literal_is_pinned_when_allowed() -> None:
    async with serve(ok, host="::1") as (base, seen):
        refused = Egress(EgressPolicy())
        allowed = Egress(EgressPolicy(allow=parse_allow("::1/128")))
        try:
            with pytest.raises(EgressRefused):
                await refused.request("GET", base)
            reply = await allowed.request("GET", base + "/six")
        finally:
            await refused.close()
            await allowed.close()
    assert reply.status == 200
    assert [r[1] for r in seen.requests] == ["/six"]


async def test_https_connects_to_the_address_but_checks_the_name(tmp_path: Path) -> None:
    server_ctx, client_ctx = self_signed(tmp_path, dns_name="localhost")
    async with serve(ok, ssl_context=server_ctx) as (base, seen):
        egress = Egress(EgressPolicy(allow=parse_allow("127.0.0.1/32,::1/128")), verify=client_ctx)
        try:
            by_name = await egress.request("GET", base.replace("127.0.0.1", "localhost") + "/tls")
            with pytest.raises(httpx.ConnectError):  # the certificate names localhost, not 127.0.0.1
                await egress.request("GET", base + "/tls")
        finally:
            await egress.close()
    assert by_name.status == 200
    assert seen.requests[0][2]["Host"].startswith("localhost:")


async def test_a_dripping_answer_meets_the_deadline() -> None:
    import asyncio

    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(30):
            await response.write(b"x")
            await asyncio.sleep(0.1)
        return response

    async with serve(drip) as (base, _):
        egress = Egress(EgressPolicy(allow=parse_allow("127.0.0.1/32"), timeout=1, deadline=0.5))
        try:
            with pytest.raises(httpx.TimeoutException, match=r"within 0\.5 s"):
                await egress.request("GET", base)
        finally:
            await egress.close()


@given(st.ip_addresses(), st.lists(st.ip_addresses(), max_size=3))
def test_allow_list_only_widens(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    extra: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> None:
    allow = tuple(ipaddress.ip_network(a) for a in extra)
    if permitted(ip):
        assert permitted(ip, allow)
    if ip in extra:
        assert permitted(ip, allow)
