"""Callback SSRF: a ``callback_url`` that is, or resolves to, an internal address is refused
when the request is created (422 naming ``callback_url``, nothing written), and again
by the connect-time resolver, unless ``COUNTERSIGN_ALLOW_PRIVATE_CALLBACKS=1``.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from countersign.callbacks.guard import check_callback_url, is_public_address
from countersign.callbacks.resolver import PublicOnlyResolver
from countersign.server import ENGINE
from tests.api.conftest import EXPORT, Api, running
from tests.api.conftest import api as api  # the fixture
from tests.security.conftest import snapshot

PUBLIC = "93.184.216.34"

# Names only our fake DNS knows (the test machine may have no DNS at all).
FAKE_DNS = {
    "metadata.attacker.test": ["169.254.169.254"],
    "loopback.attacker.test": ["127.0.0.1"],
    "private.attacker.test": ["10.1.2.3"],
    "ula.attacker.test": ["fd12:3456::1"],
    "mixed.attacker.test": [PUBLIC, "192.168.0.10"],  # one bad answer is enough
    "nat64.attacker.test": ["64:ff9b::a9fe:a9fe"],
    "public.attacker.test": [PUBLIC],
}

INTERNAL = [
    "http://127.0.0.1/hook",
    "http://127.8.9.10:8080/hook",
    "http://localhost/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://0.0.0.0/",
    "http://0/",
    "http://[::1]/",
    "http://[::]/",
    "http://[fd00::1]/",
    "http://[fc00::1]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fec0::1]/",  # site-local (deprecated, still not public)
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[64:ff9b:1::a00:1]/",  # local-use NAT64
    "http://[2002:7f00:1::1]/",  # 6to4 of 127.0.0.1
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 of 169.254.169.254
    "http://2130706433/",  # 127.0.0.1 in decimal
    "http://0x7f000001/",  # ... in hex
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",  # ... in octal
    "http://127.1/",  # ... shortened
    "http://2852039166/",  # 169.254.169.254 in decimal
    "http://0xa9fea9fe/",
    "http://224.0.0.1/",  # multicast
    "http://255.255.255.255/",
    "https://metadata.attacker.test/",
    "https://loopback.attacker.test/",
    "https://private.attacker.test/",
    "https://ula.attacker.test/",
    "https://mixed.attacker.test/",
    "https://nat64.attacker.test/",
    "https://user:pass@public.attacker.test/",  # credentials in the URL
    "ftp://public.attacker.test/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
]


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """``*.attacker.test`` answer from ``FAKE_DNS``; everything else resolves as usual."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and name.endswith(".attacker.test"):
            if name not in FAKE_DNS:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            found = []
            for address in FAKE_DNS[name]:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                found += real(address, port, family, socket.SOCK_STREAM)
            return found
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


async def test_internal_destinations_are_refused_and_nothing_is_written(api: Api) -> None:
    token = await api.client()
    before = await snapshot(api.app[ENGINE])
    accepted = []
    for url in INTERNAL:
        reply = await api.call("POST", "/v1/requests", token, json={**EXPORT, "callback_url": url})
        if reply.status != 422 or reply.fields() != {"callback_url"}:
            accepted.append(f"{url}: {reply.status}")
    assert accepted == []
    assert await snapshot(api.app[ENGINE]) == before


async def test_the_refusal_says_why(api: Api) -> None:
    token = await api.client()
    url = "https://metadata.attacker.test/"
    reply = await api.call("POST", "/v1/requests", token, json={**EXPORT, "callback_url": url})
    (error,) = reply.problem(422)["errors"]
    assert "169.254.169.254" in error["message"]
    assert "COUNTERSIGN_ALLOW_PRIVATE_CALLBACKS" in error["message"]


async def test_a_public_destination_is_accepted(api: Api) -> None:
    token = await api.client()
    for url in (f"https://{PUBLIC}/hook", "https://public.attacker.test/hook"):
        reply = await api.call("POST", "/v1/requests", token, json={**EXPORT, "callback_url": url})
        assert reply.status == 201, (url, reply.body)


async def test_the_operator_may_allow_private_destinations(database_url: str) -> None:
    async with running(database_url, allow_private_callbacks=True) as api:
        token = await api.client()
        for url in ("http://127.0.0.1:9/hook", "http://[::1]/", "https://metadata.attacker.test/"):
            reply = await api.call(
                "POST", "/v1/requests", token, json={**EXPORT, "callback_url": url}
            )
            assert reply.status == 201, (url, reply.body)
        # Credentials and other schemes stay refused.
        url = "https://user:pass@public.attacker.test/"
        reply = await api.call("POST", "/v1/requests", token, json={**EXPORT, "callback_url": url})
        assert reply.fields() == {"callback_url"}


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "169.254.169.254", "fd00::1", "64:ff9b::a00:1", "2002:c0a8:1::1"],
)
def test_is_public_address_refuses_internal_addresses(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", [PUBLIC, "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_is_public_address_takes_public_ones(address: str) -> None:
    assert is_public_address(address)


async def test_the_connect_time_resolver_refuses_a_rebound_name() -> None:
    """A name checked as public at creation may answer otherwise at delivery (rebinding)."""
    resolver = PublicOnlyResolver()
    try:
        for name in ("metadata.attacker.test", "nat64.attacker.test", "loopback.attacker.test"):
            with pytest.raises(OSError, match="internal"):
                await resolver.resolve(name, 443)
        mixed = await resolver.resolve("mixed.attacker.test", 443)
        assert [r["host"] for r in mixed] == [PUBLIC]  # only the public answer is dialled
    finally:
        await resolver.close()


async def test_the_delivery_check_is_the_same_check() -> None:
    for url in INTERNAL:
        assert await check_callback_url(url, allow_private=False) is not None, url
