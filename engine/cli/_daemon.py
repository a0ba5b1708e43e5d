"""`engine daemon`: a warm engine process that short commands fork from.

Most of a short command's wall time is start-up, not work: Python, numpy and numba import, numba
readies its compiler and the cached kernels load (about 0.5 s on a 2-core machine before any
engine code runs). `engine daemon start` pays that once: it runs a backtest command on a small
generated CSV file (which imports the engine and loads the kernels a backtest uses) and waits on
a Unix socket. Then each
command in `COMMANDS` (`engine backtest`) connects, hands over its arguments, working directory,
environment and standard input, output and error (the descriptors themselves: a terminal stays a
terminal), and the daemon forks a child that runs it: the command, started warm, in about a
tenth of the time. Output, exit status and Ctrl-C behave as they do without the daemon.

Safety:
- The socket sits in a directory only this user can enter (mode 0700, checked by both ends), and
  each end checks the other's uid (SO_PEERCRED): nothing of another user's connects, and a
  command never hands its environment to another user's process.
- A daemon serves only commands whose engine code, Python and import-time environment (NUMBA_*,
  PYTHON*, ENGINE_*, locale, ...) are those it started with (`fingerprint`); any other command
  runs in its own process as if no daemon were there. A daemon that finds its code changed
  stops.
- Ctrl-C and the other signals a command receives are passed to its process group; a command
  whose client dies (kill -9) is killed with it. The daemon exits after `--idle` seconds
  without a command (30 minutes by default) or on `engine daemon stop`; a socket left by a
  killed daemon is removed by the next `engine daemon start`.

`ENGINE_NO_DAEMON=1` makes a command run in its own process even when a daemon is up.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import selectors
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "DaemonError", "forward", "fingerprint", "runtime_dir", "socket_path",
           "serve", "start", "stop", "status"]

# The commands a daemon runs: they read files and compute, and end by themselves.
COMMANDS = frozenset({"backtest"})
IDLE = 1800.0  # seconds without a command before a daemon exits
_ENV_PREFIXES = ("NUMBA_", "PYTHON", "ENGINE_", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_",
                 "ARROW_", "LD_", "LC_", "LANG", "TZ", "VIRTUAL_ENV")
_HEADER = struct.Struct("!I")
_MAX_MESSAGE = 1 << 22
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class DaemonError(RuntimeError):
    """The daemon cannot start, or its directory is not safe; the message says why."""


# -- where -----------------------------------------------------------------------------------------

def runtime_dir(create: bool = False) -> Path | None:
    """The directory of this user's daemon sockets (`engine.paths.runtime_dir`). None when it
    does not exist (and `create` is false). Raise DaemonError when it is not a directory of this
    user's that no one else can enter."""
    from engine.paths import runtime_dir as chosen

    path = chosen()
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700, parents=True)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        raise DaemonError(f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise DaemonError(f"{path} belongs to another user")
    if st.st_mode & 0o077:
        raise DaemonError(f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):04o}): "
                          f"run chmod 700 {path}")
    return path


def socket_path(create: bool = False) -> Path | None:
    """This Python environment's daemon socket (one daemon per virtual environment)."""
    root = runtime_dir(create)
    if root is None:
        return None
    key = hashlib.sha256(f"{sys.prefix}\0{sys.executable}".encode()).hexdigest()[:16]
    return root / f"daemon-{key}.sock"


def fingerprint(env: dict[str, str] | None = None) -> str:
    """What a forked command inherits from the daemon that it would otherwise make itself: the
    engine's code (each source file's path, size and modification time), the interpreter and
    its import path, and the environment variables read at import time."""
    import engine

    h = hashlib.sha256()
    h.update(f"{sys.version}\0{sys.executable}\0{sys.prefix}\0{sys.path[1:]}".encode())
    root = Path(engine.__file__).parent
    for base, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(base, name))
                h.update(f"{base}/{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    env = os.environ if env is None else env
    for key in sorted(k for k in env if k.startswith(_ENV_PREFIXES)):
        h.update(f"{key}={env[key]}\0".encode())
    return h.hexdigest()


# -- messages --------------------------------------------------------------------------------------

def _send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    frame = _HEADER.pack(len(data)) + data
    if fds:
        socket.send_fds(sock, [frame], fds)
    else:
        sock.sendall(frame)


def _recv_exact(sock: socket.socket, n: int, have: bytes = b"") -> bytes | None:
    buf = bytearray(have)
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv(sock: socket.socket, with_fds: bool = False) -> tuple[dict | None, list[int]]:
    """One message (None at end of stream) and the descriptors that came with it."""
    fds: list[int] = []
    if with_fds:
        first, fds, _, _ = socket.recv_fds(sock, 65536, 3)
        if not first:
            return None, fds
    else:
        first = b""
    head = _recv_exact(sock, _HEADER.size, first[:_HEADER.size])
    if head is None:
        return None, fds
    (size,) = _HEADER.unpack(head)
    if size > _MAX_MESSAGE:
        raise ValueError(f"a message of {size} bytes")
    body = _recv_exact(sock, size, first[_HEADER.size:])
    if body is None:
        return None, fds
    return json.loads(body), fds


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def _dial(timeout: float | None = None) -> socket.socket | None:
    """A connection to this environment's daemon, or None when none listens."""
    path = socket_path()
    if path is None or not path.exists():
        return None
    return _connect(path, timeout)


def _connect(path: Path, timeout: float | None = None) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        if _peer_uid(sock) != os.getuid():
            raise ConnectionRefusedError("the daemon socket belongs to another user")
    except OSError:
        sock.close()
        return None
    return sock


# -- the client ------------------------------------------------------------------------------------

def forward(argv: list[str]) -> int | None:
    """Run the command `argv` (without the program name) in a warm child of this environment's
    daemon and return its exit status; None when there is no daemon to run it (not started,
    gone, or serving other code or another environment): then the caller runs it itself."""
    if os.environ.get("ENGINE_NO_DAEMON") or not argv or argv[0] not in COMMANDS:
        return None
    try:
        sock = _dial()
    except DaemonError:
        return None
    if sock is None:
        return None
    # Signals are caught from here on: before the command runs they wait, then they are
    # passed on; if the daemon turns the command away they are raised here again.
    caught: list[int] = []
    running = False

    def pass_on(signum: int, frame: Any) -> None:
        if not running:
            caught.append(signum)
            return
        with contextlib.suppress(OSError):
            _send(sock, {"signal": signum})

    before = {s: signal.signal(s, pass_on) for s in _FORWARDED}
    try:
        with sock:
            request = {"op": "run", "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                       "path0": sys.path[0], "fingerprint": fingerprint()}
            try:
                _send(sock, request, [0, 1, 2])
                reply, _ = _recv(sock)
            except OSError:
                reply = None  # a closed standard descriptor, or the daemon went away
            if reply is None or "pid" not in reply:
                return None
            running = True
            for signum in caught:
                with contextlib.suppress(OSError):
                    _send(sock, {"signal": signum})
            caught.clear()
            return _follow(sock)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        for signum in caught:
            signal.raise_signal(signum)


def _follow(sock: socket.socket) -> int:
    """Wait for the daemon to report how the command ended; return its exit status as the
    shell would give it."""
    while True:
        try:
            message, _ = _recv(sock)
        except OSError:
            message = None
        if message is None:
            print("engine: the daemon went away while running the command", file=sys.stderr)
            return 1
        if "exit" in message:
            return int(message["exit"])


# -- the daemon ------------------------------------------------------------------------------------

_WARM_STRATEGY = """
from engine import Strategy


class Warm(Strategy):
    def on_start(self):
        fast = self.ctx.indicator("sma", 3, exact=True)
        slow = self.ctx.indicator("sma", 8, exact=True)
        self.cross = self.ctx.indicator("cross", fast, slow)

    def on_bar(self, symbol):
        direction = self.cross[-1]
        self.log("%s close %.2f", symbol, self.ctx.ohlcv(symbol)["close"][-1])
        if direction:
            self.ctx.target(symbol, direction)
"""


def _warm(main: Callable[[list[str]], int]) -> None:
    """Run a backtest command (`main`: the CLI's entry point) on a small CSV file as a user
    would: the engine's modules import, numba readies its compiler and the kernels a backtest
    uses load, here, once."""
    import io
    import math
    import tempfile

    with tempfile.TemporaryDirectory(prefix="engine-daemon-") as tmp:
        rows = ["date,open,high,low,close,volume"]
        for i in range(400):
            c = 100.0 + 10.0 * math.sin(i / 9.0)
            day = time.strftime("%Y-%m-%d", time.gmtime(1_500_000_000 + 86_400 * i))
            rows.append(f"{day},{c - 0.5:.2f},{c + 1:.2f},{c - 1:.2f},{c:.2f},1000")
        data, strat = Path(tmp, "warm.csv"), Path(tmp, "warm.py")
        data.write_text("\n".join(rows) + "\n")
        strat.write_text(_WARM_STRATEGY)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main(["backtest", str(strat), "--data", str(data), "--commission", "0.001",
                  "--close-at-end", "--json", str(Path(tmp, "warm.json"))])


class _Server:
    def __init__(self, main: Callable[[list[str]], int], path: Path, idle: float) -> None:
        self.main = main
        self.path = path
        self.idle = idle
        self.code = fingerprint()
        self.started = time.time()
        self.served = 0
        self.stopping = False
        self.children: dict[int, socket.socket] = {}  # command pid -> its client's connection
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def bind(self) -> None:
        lock = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.exists():
                other = _connect(self.path, timeout=2.0)
                if other is not None:
                    other.close()
                    raise DaemonError(f"a daemon is already listening on {self.path}")
                self.path.unlink()  # left by a daemon that was killed
            self.listener.bind(str(self.path))
            os.chmod(self.path, 0o600)
            self.listener.listen(64)
        finally:
            os.close(lock)
        self.inode = self.path.stat().st_ino

    def run(self) -> None:
        self.listener.setblocking(False)
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        last = time.monotonic()
        while True:
            if self.children:
                timeout = None
            else:
                if self.stopping:
                    break
                timeout = self.idle - (time.monotonic() - last)
                if timeout <= 0:
                    break
            events = self.sel.select(timeout)
            for key, _ in events:
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        self.wake_r.recv(4096)
                else:
                    self._from_client(key.fileobj, key.data)
            self._reap()
            if events or self.children:
                last = time.monotonic()  # idle counts from the last thing that happened
        self.close()

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self.inode:
                self.path.unlink()  # ours still: a later daemon may have taken the name
        self.listener.close()
        self.sel.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            try:
                self._request(conn)
            except (OSError, ValueError) as exc:
                print(f"engine daemon: a request failed: {exc}", file=sys.stderr)
                conn.close()

    def _request(self, conn: socket.socket) -> None:
        # A frame is a few bytes, sent whole: a connection never waits long on one (the
        # selector only hands over connections with something to read).
        conn.settimeout(5.0)
        if _peer_uid(conn) != os.getuid():
            conn.close()
            return
        message, fds = _recv(conn, with_fds=True)
        try:
            op = (message or {}).get("op")
            if op == "status":
                _send(conn, {"pid": os.getpid(), "started": self.started, "idle": self.idle,
                             "served": self.served, "running": len(self.children),
                             "fingerprint": self.code})
            elif op == "stop":
                self.stopping = True
                _send(conn, {"stopping": True, "pid": os.getpid()})
            elif op == "run" and len(fds) == 3:
                if message.get("fingerprint") != self.code:
                    _send(conn, {"refused": "code or environment differs"})
                    if fingerprint() != self.code:
                        self.stopping = True  # the code changed under this daemon
                else:
                    self._fork(conn, message, fds)
                    return  # the connection follows the command
            else:
                _send(conn, {"refused": f"unknown request {op!r}"})
        finally:
            for fd in fds:
                os.close(fd)
        conn.close()

    def _fork(self, conn: socket.socket, message: dict, fds: list[int]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = self._child(conn, message, fds)
            finally:
                os._exit(code)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # as the child does: whichever runs first makes the group
        self.served += 1
        self.children[pid] = conn
        self.sel.register(conn, selectors.EVENT_READ, pid)
        try:
            _send(conn, {"pid": pid})
        except OSError:
            self._kill(pid)

    def _child(self, conn: socket.socket, message: dict, fds: list[int]) -> int:
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.sel.close()
        for other in (self.listener, self.wake_r, self.wake_w, conn, *self.children.values()):
            other.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        try:
            os.chdir(message["cwd"])
        except OSError as exc:
            print(f"engine: cannot run in {message['cwd']}: {exc.strerror}", file=sys.stderr)
            return 1
        os.environ.clear()
        os.environ.update(message["env"])
        sys.path[0] = message["path0"]
        sys.argv = ["engine", *message["argv"]]
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(line_buffering=os.isatty(stream.fileno()))
        if "random" in sys.modules:
            sys.modules["random"].seed()
        import atexit

        try:
            code = self.main(message["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, int | None):
                print(exc.code, file=sys.stderr)
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        return int(code or 0)

    def _from_client(self, conn: socket.socket, pid: int) -> None:
        try:
            message, _ = _recv(conn)
        except TimeoutError:
            return
        except (OSError, ValueError):
            message = None
        if message is None:
            # The client is gone (killed): its command goes with it.
            self.sel.unregister(conn)
            self._kill(pid)
            return
        signum = message.get("signal")
        if signum in {int(s) for s in _FORWARDED}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signum)

    def _kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(conn)
            with contextlib.suppress(OSError):
                _send(conn, {"exit": code if code >= 0 else 128 - code})
            conn.close()


def serve(main: Callable[[list[str]], int], idle: float = IDLE,
          ready_fd: int | None = None) -> None:
    """Be this environment's daemon, running commands through `main` (the CLI's entry point,
    given a command's arguments), until stopped or idle for `idle` seconds (in the foreground:
    `start` runs it in its own session). `ready_fd` hears one line when it serves."""
    path = socket_path(create=True)
    assert path is not None
    server = _Server(main, path, idle)
    _warm(main)
    import gc

    gc.freeze()  # what every command shares stays out of the children's collections
    server.bind()
    if ready_fd is not None:
        os.write(ready_fd, f"{os.getpid()}\n".encode())
        os.close(ready_fd)
    server.run()


def _ask(op: str) -> dict | None:
    sock = _dial(timeout=5.0)
    if sock is None:
        return None
    with sock:
        try:
            _send(sock, {"op": op})
            return _recv(sock)[0]
        except OSError:
            return None


def status() -> dict | None:
    """The running daemon's pid, start time, idle limit, commands served and running, and
    whether it serves this code (`current`); None when none answers."""
    reply = _ask("status")
    if reply is not None:
        reply["current"] = reply.get("fingerprint") == fingerprint()
    return reply


def stop(timeout: float = 30.0) -> int | None:
    """Ask the daemon to stop once its running commands end; wait for it to go. Return its
    pid, or None when none was running."""
    reply = _ask("stop")
    if reply is None:
        return None
    pid = int(reply["pid"])
    try:
        fd = os.pidfd_open(pid)  # readable once the process has exited
    except ProcessLookupError:
        return pid
    try:
        import select

        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    return pid


def start(idle: float = IDLE, timeout: float = 120.0) -> tuple[int, bool]:
    """Start this environment's daemon in the background and wait until it serves. Return its
    pid and whether it was started now (False: one serving this code was running). A daemon
    of other code is stopped first."""
    import subprocess

    now = status()
    if now is not None:
        if now["current"]:
            return int(now["pid"]), False
        stop()
    path = socket_path(create=True)
    assert path is not None
    read, write = os.pipe()
    log = path.with_suffix(".log")
    with open(log, "ab") as err:
        os.chmod(log, 0o600)
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "daemon", "serve", "--idle", str(idle),
             "--ready-fd", str(write)],
            cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            pass_fds=(write,), start_new_session=True,
            env={k: v for k, v in os.environ.items() if k != "ENGINE_NO_DAEMON"})
    os.close(write)
    try:
        with os.fdopen(read, "rb") as ready:
            import select

            if not select.select([ready], [], [], timeout)[0]:
                proc.kill()
                raise DaemonError(f"the daemon did not get ready within {timeout:g} s")
            line = ready.readline()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if not line:
        proc.wait()
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        raise DaemonError("the daemon failed to start" + (f": {tail[0]}" if tail else ""))
    return int(line), True


# -- the command -----------------------------------------------------------------------------------

def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "daemon", help="keep a warm engine process that `engine backtest` starts from",
        description="A background engine process with numpy, numba and the kernels loaded: "
        "while it runs, `engine backtest` forks from it and starts in a tenth of the time. "
        "Only this user reaches it; it stops after --idle seconds without a command.")
    p.add_argument("action", choices=("start", "stop", "status", "serve"),
                   help="start it in the background, stop it, show it, or serve in the "
                   "foreground (for a service manager)")
    p.add_argument("--idle", type=float, default=IDLE, metavar="SECONDS",
                   help=f"exit after this long without a command (default {IDLE:g})")
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.cli._common import UsageError
    from engine.timefmt import iso

    if not args.idle > 0:
        raise UsageError(f"--idle must be above 0 seconds, got {args.idle:g}")
    try:
        if args.action == "serve":
            serve(args.cli_main, args.idle, args.ready_fd)
            return 0
        if args.action == "start":
            pid, new = start(args.idle)
            print(f"engine daemon: {'started' if new else 'already running'}, pid {pid}; "
                  f"{', '.join(f'engine {c}' for c in sorted(COMMANDS))} now starts warm "
                  "(engine daemon stop ends it)")
            return 0
        if args.action == "stop":
            pid = stop()
            print("engine daemon: not running" if pid is None
                  else f"engine daemon: stopped, pid {pid}")
            return 0
        now = status()
        if now is None:
            print("engine daemon: not running")
            return 3
        print(f"engine daemon: running, pid {now['pid']}, since {iso(now['started'])}, "
              f"{now['served']} commands served, {now['running']} running, exits after "
              f"{now['idle']:g} s idle"
              + ("" if now["current"] else "; it serves other code or another environment "
                 "than this shell's: engine daemon start replaces it"))
        return 0
    except DaemonError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC):
            raise UsageError(f"cannot make the daemon's socket: {exc}") from None
        raise
