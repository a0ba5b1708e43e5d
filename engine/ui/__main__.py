"""`python -m engine.ui attach RUNFILE`: the dashboard process a run with `--ui` starts.

It prints its URL as its first line on stdout, serves until its stdin closes (the run ending) or
the run's process is gone, and never writes to the run's memory.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    from engine.ui._main import serve_ui

    p = argparse.ArgumentParser(prog="python -m engine.ui")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("attach")
    a.add_argument("runfile")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=0)
    a.add_argument("--allow-remote", action="store_true")
    args = p.parse_args(argv)
    token = os.environ.pop("ENGINE_UI_TOKEN", None)

    def ready(url: str) -> None:
        print(url, flush=True)

    try:
        serve_ui(attach=args.runfile, host=args.host, port=args.port,
                 allow_remote=args.allow_remote, token=token, ready=ready,
                 until_stdin_closes=True)
    except (OSError, LookupError, ValueError) as exc:
        # One line on the run's stderr (a port taken, a run file gone); the run goes on.
        print(f"engine: dashboard on {args.host}:{args.port}: {exc}", file=sys.stderr,
              flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
