"""A sweep host that holds the secret but lies about its results, run like the real one:

    FORGE=top python tests/chaos/forging_host.py --registry ... --secret-file ...

FORGE=top answers its first job honestly, then claims sharpe 99 and return_pct 1,000,000 (a
result that would rank first); FORGE=inf claims an infinite return on every job.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.actors import sweep_host  # noqa: E402
from engine.actors.pool import JobQueue  # noqa: E402


class ForgingQueue(JobQueue):
    answered = 0

    def finish(self, job: dict, result: dict) -> None:
        ForgingQueue.answered += 1
        mode = os.environ.get("FORGE", "top")
        if result.get("metrics") and (mode == "inf" or ForgingQueue.answered > 1):
            forged = ({"sharpe": 99.0, "return_pct": 1_000_000.0} if mode == "top"
                      else {"return_pct": float("inf")})
            result = {**result, "metrics": {**result["metrics"], **forged}}
        super().finish(job, result)


sweep_host.JobQueue = ForgingQueue

if __name__ == "__main__":
    sys.exit(sweep_host.main())
