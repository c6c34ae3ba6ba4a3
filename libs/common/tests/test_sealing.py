"""Encryption at rest (wemcp.common.sealing): the envelope, key ids, rotation, both ways to configure
a ring, and what is refused."""

from __future__ import annotations

import pytest

from wemcp.common.errors import ConfigError
from wemcp.common.sealing import Keyring, SealError, b64, mask, passphrase_kek, unb64

TWO = f"{Keyring.generate_spec('k1')},{Keyring.generate_spec('k2')}"


def test_seal_and_open_in_context():
    ring = Keyring.parse(TWO)
    assert ring.active == "k2" and ring.kids == ("k1", "k2")  # without `active` the last seals
    sealed = ring.seal(b"sk-secret", "vault:u:s:n")
    assert sealed.startswith("v1.k2.") and "sk-secret" not in sealed and ring.kek_of(sealed) == "k2"
    assert ring.open(sealed, "vault:u:s:n") == b"sk-secret"
    assert ring.seal(b"sk-secret", "vault:u:s:n") != sealed  # a fresh data key and nonces each time
    with pytest.raises(SealError, match="context"):
        ring.open(sealed, "vault:u:s:other")  # moved to another row


@pytest.mark.parametrize("bad", ["", "v1.k2", "v2.k2.a.b", "v1.k9.a.b", "v1.k2.!!.b", "v1.k2.AAAA.AAAA"])
def test_malformed_or_foreign_values_are_refused(bad):
    with pytest.raises(SealError):
        Keyring.parse(TWO).open(bad, "c")


def test_tampering_is_refused():
    ring = Keyring.parse(TWO)
    v, kid, wrapped, ct = ring.seal(b"value", "c").split(".")
    raw = bytearray(unb64(ct))
    raw[-1] ^= 1
    with pytest.raises(SealError):
        ring.open(".".join((v, kid, wrapped, b64(bytes(raw)))), "c")
    other = Keyring.parse(Keyring.generate_spec("k2"))  # the same id, another key
    with pytest.raises(SealError, match="data key"):
        other.open(ring.seal(b"value", "c"), "c")


def test_rotation_rewraps_the_data_key_only():
    k1_only = Keyring.parse(TWO, "k1")
    old = k1_only.seal(b"value", "c")
    ring = Keyring.parse(TWO, "k2")
    new = ring.rewrap(old)
    assert new.startswith("v1.k2.") and new.split(".")[3] == old.split(".")[3]  # ciphertext unchanged
    assert ring.open(new, "c") == b"value" and ring.rewrap(new) == new
    only_k2 = Keyring.parse(TWO.split(",")[1])
    assert only_k2.open(new, "c") == b"value"
    with pytest.raises(SealError, match="not configured"):
        only_k2.open(old, "c")


def test_passphrase_rings():
    ring = Keyring.from_passphrases("first-passphrase-16, second-passphrase-16", setting="X_SECRET")
    kid1, key1 = passphrase_kek("first-passphrase-16")
    assert ring.active == kid1 and len(key1) == 32 and len(ring.kids) == 2 and kid1.startswith("p")
    assert passphrase_kek("first-passphrase-16") == (kid1, key1)  # deterministic
    assert passphrase_kek("other-passphrase-16")[0] != kid1
    sealed = Keyring.from_passphrases("second-passphrase-16", setting="X_SECRET").seal(b"v", "c")
    assert ring.open(sealed, "c") == b"v"  # every passphrase of the ring opens
    for bad in ("", "short", "first-passphrase-16,short"):
        with pytest.raises(ConfigError, match="X_SECRET"):
            Keyring.from_passphrases(bad, setting="X_SECRET")


@pytest.mark.parametrize("spec", ["broken", "k1:", "k1:AAAA", "bad id!:" + "A" * 43, ","])
def test_bad_key_specs_name_the_setting(spec):
    with pytest.raises(ConfigError, match="WEMCP_AUTH_KEKS"):
        Keyring.parse(spec)


def test_active_must_be_in_the_ring():
    with pytest.raises(ConfigError, match="k3"):
        Keyring.parse(TWO, "k3")


def test_standard_base64_keys_are_accepted():
    spec = Keyring.generate_spec("k1")
    kid, key = spec.split(":")
    std = key.replace("-", "+").replace("_", "/") + "=" * (-len(key) % 4)
    assert Keyring.parse(f"{kid}:{std}").open(Keyring.parse(spec).seal(b"x", "c"), "c") == b"x"


def test_dev_key_file_is_made_once(tmp_path):
    path = tmp_path / "dir" / "kek"
    first = Keyring.from_settings(None, None, str(path))
    assert (path.stat().st_mode & 0o777) == 0o600 and first.active == "dev"
    again = Keyring.from_settings(None, None, str(path))
    assert again.open(first.seal(b"x", "c"), "c") == b"x"
    configured = Keyring.from_settings(TWO, "k1", str(tmp_path / "unused"))
    assert configured.active == "k1" and not (tmp_path / "unused").exists()


def test_mask():
    assert mask("short") == "****" and mask("0123456789abcdefWXYZ") == "****WXYZ"
