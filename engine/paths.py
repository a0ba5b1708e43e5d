"""Where the engine keeps the user's data: the data directory and one directory per account.

Only path arithmetic and name checks live here; this module never reads or writes what is inside.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

__all__ = ["data_dir", "runtime_dir", "account_dir", "list_accounts"]

# Letters, digits, '-', '_', '.'; 1..64 characters; no leading '.' (so never '.', '..' or hidden).
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_ACCOUNT_RULE = "letters, digits, '-', '_' and '.', 1 to 64 characters, not starting with '.'"


def _chosen(own: str, xdg: str, fallback: Path) -> Path:
    """$`own` when set, else $`xdg`/engine (when that is an absolute path, as the XDG spec
    requires), else `fallback`."""
    given, base = os.environ.get(own), os.environ.get(xdg)
    if given:
        return Path(given).expanduser().absolute()
    if base and os.path.isabs(base):
        return Path(base) / "engine"
    return fallback


def data_dir() -> Path:
    """Return the engine's data directory, creating it (mode 0700) if it is missing.

    It is $ENGINE_HOME when set, else $XDG_DATA_HOME/engine (when that is an absolute path, as
    the XDG spec requires), else ~/.local/share/engine.
    """
    path = _chosen("ENGINE_HOME", "XDG_DATA_HOME", Path.home() / ".local" / "share" / "engine")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def runtime_dir() -> Path:
    """Where this user's sockets go (`engine daemon`'s): $ENGINE_RUNTIME_DIR when set, else
    $XDG_RUNTIME_DIR/engine, else /tmp/engine-<uid>. Only the path: it may not exist."""
    return _chosen("ENGINE_RUNTIME_DIR", "XDG_RUNTIME_DIR", Path("/tmp") / f"engine-{os.getuid()}")


def account_dir(name: str) -> Path:
    """Return the directory of account `name` (data_dir()/accounts/name); it may not exist yet.

    Raise ValueError if `name` breaks the rule: letters, digits, '-', '_' and '.', 1 to 64
    characters, not starting with '.'.
    """
    if not isinstance(name, str) or not _ACCOUNT_NAME.fullmatch(name):
        raise ValueError(f"bad account name {name!r}: use {_ACCOUNT_RULE}")
    return data_dir() / "accounts" / name


def list_accounts() -> list[str]:
    """Return the names of the accounts that have a directory, sorted."""
    root = data_dir() / "accounts"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _ACCOUNT_NAME.fullmatch(p.name))


class PrivateFileError(ValueError):
    """A file that must be private (keys, secrets) is missing, unreadable, or open to others;
    the message names the file and what to do, never its content."""


def read_private_file(path: Path, what: str, limit: int = -1) -> bytes:
    """The bytes of `path` (at most `limit`; -1: all), a regular file of this user's that no
    one else may read or write (mode 0600 or tighter), checked on the descriptor it is read
    from (a link is refused). `what` names it in errors ("sweep secret file")."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise PrivateFileError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise PrivateFileError(f"{what} {path}: cannot open it ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PrivateFileError(f"{what} {path} is not a regular file")
        if st.st_mode & 0o077:
            raise PrivateFileError(f"{what} {path} is readable by others (mode "
                                   f"{stat.S_IMODE(st.st_mode):04o}): run chmod 600 {path}")
        if st.st_uid != os.getuid():
            raise PrivateFileError(f"{what} {path} belongs to another user")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit)
    finally:
        os.close(fd)
