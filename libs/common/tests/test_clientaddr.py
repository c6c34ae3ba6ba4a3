"""The client address: the socket's peer, or what configured proxies forwarded (rightmost untrusted)."""

from __future__ import annotations

import pytest

from wemcp.common.clientaddr import ClientAddresses, bucket


def scope(peer: str, *headers: tuple[str, str]) -> dict:
    return {"client": (peer, 50000), "headers": [(k.encode(), v.encode()) for k, v in headers]}


PROXIES = ["10.0.0.0/8", "2001:db8:ffff::/48"]


@pytest.mark.parametrize("peer,headers,expected", [
    # no configured proxy: the socket, whatever is claimed
    ("198.51.100.1", [("x-forwarded-for", "203.0.113.9")], "198.51.100.1"),
    # a proxy's peer: rightmost entry that is not a proxy; a forged leftmost entry changes nothing
    ("10.0.0.2", [("x-forwarded-for", "1.1.1.1, 203.0.113.9")], "203.0.113.9"),
    ("10.0.0.2", [("x-forwarded-for", "203.0.113.9, 10.0.0.7")], "203.0.113.9"),  # two proxies
    ("10.0.0.2", [("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "203.0.113.9:4711")], "203.0.113.9"),
    ("10.0.0.2", [("x-forwarded-for", "1.1.1.1, unknown")], "10.0.0.2"),  # garbage: the proxy
    ("10.0.0.2", [("x-forwarded-for", "10.0.0.9")], "10.0.0.9"),  # only proxies: the first of them
    ("10.0.0.2", [], "10.0.0.2"),
    ("::ffff:10.0.0.2", [("x-forwarded-for", "[2001:db8::5]:443")], "2001:db8::5"),  # mapped peer
    # the header the proxies do not write is the client's to forge
    ("10.0.0.2", [("forwarded", "for=203.0.113.9")], "10.0.0.2"),
])
def test_x_forwarded_for(peer, headers, expected):
    assert ClientAddresses(PROXIES).of(scope(peer, *headers)) == expected


def test_forwarded_header():
    addrs = ClientAddresses(PROXIES, "Forwarded")
    s = scope("10.0.0.2", ("forwarded", 'for=1.1.1.1, for="[2001:db8::7]:80";proto=https, for=10.0.0.3'),
              ("x-forwarded-for", "198.51.100.1"))
    assert addrs.of(s) == "2001:db8::7"
    assert addrs.of(scope("10.0.0.2", ("forwarded", "for=_hidden"))) == "10.0.0.2"


def test_bad_settings_and_buckets():
    with pytest.raises(ValueError, match="not an address"):
        ClientAddresses(["10.0.0.0/33"])
    with pytest.raises(ValueError):
        ClientAddresses([], "x-real-ip")
    assert bucket("203.0.113.9") == "203.0.113.9"
    assert bucket("2001:db8:1:2:3:4:5:6") == bucket("2001:db8:1:2::9") == "2001:db8:1:2::/64"
    assert bucket("") == "unknown"
    assert ClientAddresses().of({"headers": []}) == ""
