"""Request signing against the venues' published examples, and the keys loader's refusals."""

from __future__ import annotations

import base64
import os
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from providers._net.keys import ApiKeys, KeysError, Secret, load_keys
from providers.binance import _sign as bsign
from providers.kraken import _sign as ksign

# binance-spot-api-docs, "SIGNED endpoint examples for POST /api/v3/order" (HMAC keys).
BINANCE_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
BINANCE_PAYLOAD = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
                   "&recvWindow=5000&timestamp=1499827319559")
BINANCE_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"

# Kraken "Spot REST Authentication", the worked example (buy 1.25 XBTUSD at 37500).
KRAKEN_SECRET = ("kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZu"
                 "j6F1huXg==")
KRAKEN_NONCE = "1616492376594"
KRAKEN_POST = ("nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy"
               "&volume=1.25")
KRAKEN_SIGNATURE = ("4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn"
                    "6H8ndwLUQ==")

# RFC 8032 section 7.1, TEST 2: a one-byte message (0x72).
RFC8032_SEED = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
RFC8032_SIGNATURE = ("92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15"
                     "996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00")


def test_binance_hmac_matches_the_documented_example():
    assert bsign.hmac_signature(BINANCE_SECRET, BINANCE_PAYLOAD) == BINANCE_SIGNATURE
    signer = bsign.Signer(ApiKeys("binance", Secret("k"), Secret(BINANCE_SECRET), "test"))
    assert signer.signed_query(BINANCE_PAYLOAD).endswith(f"&signature={BINANCE_SIGNATURE}")


def _pem(seed_hex: str) -> str:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


def test_binance_ed25519_matches_rfc8032_and_verifies():
    # The payload here is the raw test message: Binance signs the payload's bytes as given.
    key = bsign._ed25519_key(_pem(RFC8032_SEED))
    assert key.sign(b"\x72").hex() == RFC8032_SIGNATURE
    signer = bsign.Signer(ApiKeys("binance", Secret("k"), Secret(_pem(RFC8032_SEED)), "test"))
    assert signer.kind == "ed25519"
    sig = base64.b64decode(signer.sign(BINANCE_PAYLOAD))
    key.public_key().verify(sig, BINANCE_PAYLOAD.encode())  # raises if wrong
    assert "%2B" in signer.signed_query("a=1") or "+" not in signer.sign("a=1")


def test_binance_ws_payload_sorts_parameters():
    assert bsign.ws_payload({"timestamp": "2", "apiKey": "k", "signature": "x"}) == \
        "apiKey=k&timestamp=2"


def test_kraken_api_sign_matches_the_documented_example():
    assert ksign.api_sign("/0/private/AddOrder", KRAKEN_NONCE, KRAKEN_POST, KRAKEN_SECRET) == \
        KRAKEN_SIGNATURE


def test_kraken_nonces_strictly_increase_even_when_the_clock_steps_back():
    times = iter([100.0, 100.0, 99.0, 101.0])
    nonces = ksign.Nonces(lambda: next(times))
    got = [int(nonces.next()) for _ in range(4)]
    assert got == sorted(set(got))
    assert got[-1] == 101_000_000


def test_secrets_never_print():
    s = Secret("hunter2")
    assert "hunter2" not in repr(s) + str(s) + f"{s}" + repr(ApiKeys("x", s, s, "src"))
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_keys_from_environment_and_missing_keys():
    keys = load_keys("binance", env={"ENGINE_BINANCE_API_KEY": "abc",
                                     "ENGINE_BINANCE_API_SECRET": "def"})
    assert keys.api_key.reveal() == "abc"
    assert keys.secret.reveal() == "def"
    with pytest.raises(KeysError, match="ENGINE_KRAKEN_API_KEY"):
        load_keys("kraken", env={})


def test_keys_file_must_be_private(tmp_path: Path):
    f = tmp_path / "keys.toml"
    f.write_text('api_key = "abc"\nsecret = "topsecret"\n')
    os.chmod(f, 0o644)
    with pytest.raises(KeysError, match="chmod 600") as err:
        load_keys("binance", f, env={})
    assert "topsecret" not in str(err.value)
    os.chmod(f, 0o600)
    assert load_keys("binance", f, env={}).secret.reveal() == "topsecret"
    f.write_text('api_key = "abc"\nsecret = topsecret-unquoted\n')
    with pytest.raises(KeysError) as err:
        load_keys("binance", f, env={})
    assert "topsecret" not in str(err.value)
