"""Bearer API keys: stored only as SHA-256 hashes, compared in constant time.

Keys come from the config (as hashes) and from an environment variable (plain,
hashed at start and then dropped). No key configured means auth is off.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

from serve_app.config import AuthConfig


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, hashes_to_tenant: dict[str, str]) -> None:
        self._entries = [(bytes.fromhex(digest), tenant) for digest, tenant in hashes_to_tenant.items()]

    @classmethod
    def from_config(cls, auth: AuthConfig, environ: Mapping[str, str] = os.environ) -> KeyRing:
        table = {key.sha256: key.tenant for key in auth.keys}
        plain = environ.get(auth.keys_env, "") if auth.keys_env else ""
        for key in filter(None, (part.strip() for part in plain.split(","))):
            table.setdefault(key_hash(key), "default")
        if auth.required and not table:
            raise ValueError(f"auth.required is set but no API key is configured (auth.keys or ${auth.keys_env})")
        return cls(table)

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def tenant_for(self, authorization: str | None) -> str | None:
        """The tenant owning the presented Bearer key, or None if it is not valid."""
        if not self.enabled:
            return "default"
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        presented = hashlib.sha256(key.strip().encode()).digest()
        match = None
        for digest, tenant in self._entries:  # no early exit: time does not depend on which key
            if hmac.compare_digest(presented, digest):
                match = tenant
        return match
