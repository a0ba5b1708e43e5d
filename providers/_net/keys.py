"""API keys for the venues' private endpoints: loaded from the environment or a 0600 keys file,
held in `Secret`s that never print.

Where keys come from, first found wins:
- a keys file given by path (`--keys FILE`) or by ENGINE_<VENUE>_KEYS_FILE: TOML with
  `api_key = "..."` and `secret = "..."` (a Binance Ed25519 key: the PEM private key as the
  secret). The file must be a regular file readable by its owner only (mode 0600 or 0400);
  anything else is refused before it is read.
- ENGINE_<VENUE>_API_KEY and ENGINE_<VENUE>_API_SECRET.

A `Secret`'s repr and str are a fixed mask; errors raised here name the file or variable,
never a value. Nothing here sends anything.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.paths import PrivateFileError, read_private_file
from engine.provider import ProviderFailure

__all__ = ["Secret", "ApiKeys", "KeysError", "load_keys"]


class KeysError(ProviderFailure, ValueError):
    """Keys are missing or unusable; the message says where to put them, never what they are."""


class Secret:
    """A string that shows as '***' everywhere but `reveal()`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value itself: for signing, never for logging."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple:
        raise TypeError("a Secret is not pickled")


@dataclass(frozen=True)
class ApiKeys:
    """One account's API key (sent in a header) and secret (used only to sign)."""

    venue: str
    api_key: Secret
    secret: Secret
    source: str  # where they came from: a file path or the variable names (no values)


def load_keys(venue: str, path: str | os.PathLike[str] | None = None,
              env: Mapping[str, str] | None = None) -> ApiKeys:
    """Return `venue`'s keys from `path`, ENGINE_<VENUE>_KEYS_FILE or the environment.

    Raise KeysError naming what is missing or wrong (file mode, format) without any value.
    """
    env = os.environ if env is None else env
    prefix = f"ENGINE_{venue.upper()}"
    file = path if path is not None else env.get(f"{prefix}_KEYS_FILE") or None
    if file is not None:
        return _from_file(venue, Path(file))
    key, secret = env.get(f"{prefix}_API_KEY", ""), env.get(f"{prefix}_API_SECRET", "")
    if key.strip() and secret.strip():
        return ApiKeys(venue, Secret(key.strip()), Secret(secret.strip()),
                       f"{prefix}_API_KEY/{prefix}_API_SECRET")
    raise KeysError(f"no {venue} API keys: set {prefix}_API_KEY and {prefix}_API_SECRET, or "
                    f"write them to a mode-0600 keys file and pass --keys FILE (or "
                    f"{prefix}_KEYS_FILE)")


def _from_file(venue: str, path: Path) -> ApiKeys:
    try:
        raw = read_private_file(path, f"{venue} keys file", 1 << 16)
    except PrivateFileError as exc:
        raise KeysError(str(exc)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        # The decoder's message may quote the file's text: say only where it failed.
        raise KeysError(f"{venue} keys file {path}: not TOML with api_key = \"...\" and "
                        f"secret = \"...\"") from None
    key, secret = data.get("api_key"), data.get("secret")
    if not isinstance(key, str) or not key.strip() or not isinstance(secret, str) \
            or not secret.strip():
        raise KeysError(f"{venue} keys file {path}: needs api_key = \"...\" and "
                        f"secret = \"...\" (strings)")
    return ApiKeys(venue, Secret(key.strip()), Secret(secret.strip()), str(path))
