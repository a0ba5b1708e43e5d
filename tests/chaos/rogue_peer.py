"""A peer that does not hold a sweep's secret (or holds a wrong one), run as its own process.

    python tests/chaos/rogue_peer.py register REGISTRY [--secret-file F]
    python tests/chaos/rogue_peer.py send-source HOST:PORT --marker PATH [--secret-file F]

`register` tries to join a coordinator's registry as a sweep host; `send-source` tries to make
a sweep host run a strategy whose import writes `id` into PATH (the exploit of issue 14). It
prints `refused: ...` and exits 0 when the other side refuses it, `accepted` and exits 3 when
it gets through.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio  # noqa: E402

from engine.actors._runtime import (  # noqa: E402
    LINK_ERRORS,
    TransportClosed,
    _connect,
    open_registry,
    parse_hostport,
    tractor,
)
from engine.actors.sweep_auth import derive_key, keyed, load_secret  # noqa: E402
from engine.actors.sweep_host import serve_sweep  # noqa: E402
from tests.actors.procs import free_port  # noqa: E402


async def register(registry: tuple[str, int]) -> None:
    actor = tractor.current_actor()
    async with open_registry(registry) as portal:
        await portal.run_from_ns("self", "register_actor",
                                 uid=(f"sweep.host.rogue.{os.getpid()}", "x"),
                                 sockaddr=actor.accept_addr)


async def send_source(host: tuple[str, int], marker: str) -> None:
    evil = f"import os\nos.system('id > {marker}')\n"
    async with _connect(host) as portal:
        async with portal.open_context(
                serve_sweep, strategy_name="evil.py", strategy_source=evil,
                evaluate="engine.backtests.replay:evaluate_params", options={}, history={},
        ) as (ctx, first):
            async with ctx.open_stream() as stream:
                await stream.send({"history_done": True})
                await stream.send({"job": {"id": 0, "params": {}}})
                await stream.receive()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["register", "send-source"])
    parser.add_argument("target")
    parser.add_argument("--marker")
    parser.add_argument("--secret-file")
    args = parser.parse_args()
    target = parse_hostport(args.target)
    key = derive_key(load_secret(file=args.secret_file)) if args.secret_file else None

    async def run() -> None:
        with keyed(key) if key else contextlib.nullcontext():
            async with tractor.open_root_actor(arbiter_addr=("127.0.0.1", free_port()),
                                               name="rogue", loglevel="critical"):
                with trio.fail_after(30):
                    if args.mode == "register":
                        await register(target)
                    else:
                        await send_source(target, args.marker)

    try:
        trio.run(run)
    except (*LINK_ERRORS, TransportClosed, ConnectionError, ValueError) as exc:
        # ValueError: tractor reading the host's key challenge as a message header.
        print(f"refused: {type(exc).__name__}: {exc}")
        return 0
    except BaseExceptionGroup as group:  # trio's MultiError of link errors
        print(f"refused: {group!r:.300}")
        return 0
    print("accepted")
    return 3


if __name__ == "__main__":
    sys.exit(main())
