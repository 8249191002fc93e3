"""Bearer API keys, specified: hashes only, tenant per key, auth off when no key is configured."""

from __future__ import annotations

from typing import Any

import pytest

from serve_app.auth import KeyRing, key_hash
from serve_app.config import ApiKey, AuthConfig

ALICE_KEY = "sk-alice-0123456789"
BOB_KEY = "sk-bob-abcdef"
ENV_KEY_1 = "sk-env-one"
ENV_KEY_2 = "sk-env-two"


def ring(keys: dict[str, str] | None = None, *, env: str | None = None, required: bool = False,
         keys_env: str | None = "TEST_KEYS") -> KeyRing:
    auth = AuthConfig(
        keys=[ApiKey(sha256=key_hash(key), tenant=tenant) for key, tenant in (keys or {}).items()],
        keys_env=keys_env, required=required,
    )
    environ = {} if env is None else {"TEST_KEYS": env}
    return KeyRing.from_config(auth, environ=environ)


def test_key_hash_is_hex_sha256():
    assert key_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_configured_hashes_map_keys_to_their_tenants():
    keys = ring({ALICE_KEY: "alice", BOB_KEY: "bob"})
    assert keys.enabled
    assert keys.tenant_for(f"Bearer {ALICE_KEY}") == "alice"
    assert keys.tenant_for(f"Bearer {BOB_KEY}") == "bob"


def test_env_keys_are_comma_separated_and_stripped_with_default_tenant():
    keys = ring(env=f"  {ENV_KEY_1} ,{ENV_KEY_2}  ,, ")
    assert keys.enabled
    assert keys.tenant_for(f"Bearer {ENV_KEY_1}") == "default"
    assert keys.tenant_for(f"Bearer {ENV_KEY_2}") == "default"
    assert keys.tenant_for("Bearer ") is None


def test_config_and_env_keys_combine_and_config_tenant_wins():
    keys = ring({ALICE_KEY: "alice"}, env=f"{ALICE_KEY},{ENV_KEY_1}")
    assert keys.tenant_for(f"Bearer {ALICE_KEY}") == "alice"
    assert keys.tenant_for(f"Bearer {ENV_KEY_1}") == "default"


def test_env_is_ignored_when_keys_env_is_unset():
    keys = ring(env=ENV_KEY_1, keys_env=None)
    assert not keys.enabled


def test_scheme_is_case_insensitive_and_surrounding_space_ignored():
    keys = ring({ALICE_KEY: "alice"})
    assert keys.tenant_for(f"bearer {ALICE_KEY}") == "alice"
    assert keys.tenant_for(f"BEARER  {ALICE_KEY} ") == "alice"


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", f"Bearer {ALICE_KEY}x", "Bearer sk-unknown",
     f"Basic {ALICE_KEY}", f"Token {ALICE_KEY}", ALICE_KEY, f"Bearer{ALICE_KEY}"],
    ids=["missing", "empty", "scheme-only", "scheme-space", "wrong-key-suffix", "unknown-key",
         "basic-scheme", "token-scheme", "no-scheme", "no-space"],
)
def test_invalid_authorization_gets_no_tenant(header):
    assert ring({ALICE_KEY: "alice"}, env=ENV_KEY_1).tenant_for(header) is None


@pytest.mark.parametrize("header", [None, "", "Bearer anything", "Basic xyz"])
def test_without_keys_auth_is_off_and_everyone_is_default(header):
    keys = ring()
    assert not keys.enabled
    assert keys.tenant_for(header) == "default"


def test_required_auth_without_any_key_refuses_to_start():
    with pytest.raises(ValueError, match="TEST_KEYS"):
        ring(required=True, env="  , ")


def test_required_auth_with_a_key_starts():
    assert ring(required=True, env=ENV_KEY_1).tenant_for(f"Bearer {ENV_KEY_1}") == "default"


def _strings_in(value: Any, seen: set[int] | None = None) -> list[str | bytes]:
    """Every str/bytes reachable from `value` through vars(), containers and tuples."""
    seen = seen if seen is not None else set()
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, (str, bytes)):
        return [value]
    if isinstance(value, dict):
        return [s for pair in value.items() for item in pair for s in _strings_in(item, seen)]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [s for item in value for s in _strings_in(item, seen)]
    if hasattr(value, "__dict__"):
        return _strings_in(vars(value), seen)
    return []


def test_plain_keys_are_never_stored():
    keys = ring({ALICE_KEY: "alice"}, env=f"{ENV_KEY_1},{ENV_KEY_2}")
    stored = _strings_in(keys)
    assert stored, "the walk should find the tenants at least"
    for plain in (ALICE_KEY, ENV_KEY_1, ENV_KEY_2):
        for item in stored:
            text = item if isinstance(item, str) else item.decode("latin-1")
            assert plain not in text
