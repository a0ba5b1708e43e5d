"""Binance request signatures: HMAC-SHA256 (hex) or Ed25519 (base64) over the request's
parameter string, as binance-spot-api-docs "SIGNED endpoint security" specifies.

REST: the signed payload is the query string followed by the form body, byte for byte as sent.
WebSocket API: every parameter but `signature`, sorted by name, joined as name=value with '&'.
An Ed25519 key is recognised by its PEM form (a "-----BEGIN PRIVATE KEY-----" secret). RSA keys
are not supported: Binance recommends Ed25519, and an RSA key is refused with that advice.

Nothing here sends anything or logs; a signature is returned, never stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

from providers._net.keys import ApiKeys, KeysError

__all__ = ["hmac_signature", "ed25519_signature", "Signer", "ws_payload"]


def hmac_signature(secret: str, payload: str) -> str:
    """HMAC-SHA256 of `payload` keyed with `secret`, lower-case hex."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def ed25519_signature(private_key_pem: str, payload: str) -> str:
    """Ed25519 signature of `payload` with a PEM (PKCS#8) private key, base64."""
    key = _ed25519_key(private_key_pem)
    return base64.b64encode(key.sign(payload.encode())).decode()


def _ed25519_key(pem: str):  # -> Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise KeysError("binance: the secret looks like a PEM private key but does not load "
                        "(an unencrypted PKCS#8 Ed25519 key is needed)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeysError("binance: only HMAC and Ed25519 API keys are supported (this PEM key is "
                        "another kind, e.g. RSA); create an Ed25519 key")
    return key


def ws_payload(params: dict[str, str]) -> str:
    """The WebSocket API's signed payload: parameters sorted by name, name=value joined by &."""
    return "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")


class Signer:
    """Signs Binance payloads with one account's key; its repr shows the key kind only."""

    def __init__(self, keys: ApiKeys) -> None:
        self.api_key = keys.api_key
        secret = keys.secret.reveal()
        self.kind = "ed25519" if secret.startswith("-----BEGIN") else "hmac"
        self._ed = _ed25519_key(secret) if self.kind == "ed25519" else None
        self._secret = keys.secret

    def __repr__(self) -> str:
        return f"<binance Signer {self.kind}>"

    def sign(self, payload: str) -> str:
        """The signature of `payload` (hex for HMAC, base64 for Ed25519)."""
        if self._ed is not None:
            return base64.b64encode(self._ed.sign(payload.encode())).decode()
        return hmac_signature(self._secret.reveal(), payload)

    def signed_query(self, payload: str) -> str:
        """`payload` with `&signature=...` appended, URL-encoded (base64 has + / =)."""
        return f"{payload}&signature={quote(self.sign(payload), safe='')}"
