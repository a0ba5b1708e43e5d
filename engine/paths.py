"""Where the engine keeps the user's data: the data directory and one directory per account.

Only path arithmetic and name checks live here; this module never reads or writes what is inside.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

__all__ = ["data_dir", "account_dir", "list_accounts"]

# Letters, digits, '-', '_', '.'; 1..64 characters; no leading '.' (so never '.', '..' or hidden).
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_ACCOUNT_RULE = "letters, digits, '-', '_' and '.', 1 to 64 characters, not starting with '.'"


def data_dir() -> Path:
    """Return the engine's data directory, creating it (mode 0700) if it is missing.

    It is $ENGINE_HOME when set, else $XDG_DATA_HOME/engine (when that is an absolute path, as
    the XDG spec requires), else ~/.local/share/engine.
    """
    home = os.environ.get("ENGINE_HOME")
    xdg = os.environ.get("XDG_DATA_HOME")
    if home:
        path = Path(home).expanduser().absolute()
    elif xdg and os.path.isabs(xdg):
        path = Path(xdg) / "engine"
    else:
        path = Path.home() / ".local" / "share" / "engine"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


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
