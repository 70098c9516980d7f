"""Which address counts as the client's: behind a trusted proxy the forwarded one, else the peer."""

from __future__ import annotations

import ipaddress

import pytest

from backend.config import ConfigError, load_settings
from backend.deps import resolve_client_ip

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        ("203.0.113.7", None, PROXIES, "203.0.113.7"),  # direct client
        ("203.0.113.7", "198.51.100.1", PROXIES, "203.0.113.7"),  # untrusted peer: header ignored
        ("203.0.113.7", "198.51.100.1", (), "203.0.113.7"),  # no proxies configured
        ("10.0.0.2", "198.51.100.1", PROXIES, "198.51.100.1"),  # one trusted proxy
        ("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.9", PROXIES, "198.51.100.1"),  # forged left part
        ("10.0.0.2", "10.0.0.3", PROXIES, "10.0.0.2"),  # only proxies: the peer
        ("10.0.0.2", "not-an-ip", PROXIES, "10.0.0.2"),  # garbage header
        ("fd00::1", "2001:db8::5", PROXIES, "2001:db8::5"),  # IPv6
        (None, "198.51.100.1", PROXIES, "unknown"),
    ],
)
def test_resolve_client_ip(peer, xff, trusted, expected):
    assert resolve_client_ip(peer, xff, trusted) == expected


def test_trusted_proxies_setting_is_validated(tmp_path):
    assert (
        len(load_settings(data_dir=tmp_path, trusted_proxies="10.0.0.0/8, 127.0.0.1").trusted_proxy_networks)
        == 2
    )
    with pytest.raises(ConfigError, match="CRUCIBLE_TRUSTED_PROXIES"):
        load_settings(data_dir=tmp_path, trusted_proxies="10.0.0.0/8, proxy.example")
