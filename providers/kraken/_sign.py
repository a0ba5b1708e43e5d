"""Kraken request signatures (`API-Sign`) and strictly increasing nonces, as Kraken's "Spot REST
Authentication" guide specifies: HMAC-SHA512, keyed with the base64-decoded secret, of the URI
path followed by SHA-256(nonce + POST data), base64-encoded.

Nothing here sends anything or logs; a signature is returned, never stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable

from providers._net.keys import ApiKeys, KeysError

__all__ = ["api_sign", "Signer", "Nonces"]


def api_sign(path: str, nonce: str, postdata: str, secret_b64: str) -> str:
    """The API-Sign header for a POST of `postdata` (form-encoded, holding `nonce`) to `path`
    ("/0/private/...")."""
    try:
        key = base64.b64decode(secret_b64, validate=True)
    except (binascii.Error, ValueError):
        raise KeysError("kraken: the API secret is not base64 (copy the private key exactly as "
                        "Kraken shows it)") from None
    digest = hashlib.sha256((nonce + postdata).encode()).digest()
    mac = hmac.new(key, path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


class Nonces:
    """Strictly increasing nonces: microseconds of `now()` (epoch seconds), and always above the
    last one handed out, so two requests in one microsecond or a clock step back never repeat."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._last = 0

    def next(self) -> str:
        self._last = max(self._last + 1, int(self._now() * 1_000_000))
        return str(self._last)


class Signer:
    """Signs Kraken requests with one account's key; its repr holds no key material."""

    def __init__(self, keys: ApiKeys) -> None:
        self.api_key = keys.api_key
        self._secret = keys.secret
        api_sign("/0/private/Balance", "1", "nonce=1", self._secret.reveal())  # fail early

    def __repr__(self) -> str:
        return "<kraken Signer>"

    def sign(self, path: str, nonce: str, postdata: str) -> str:
        return api_sign(path, nonce, postdata, self._secret.reveal())
