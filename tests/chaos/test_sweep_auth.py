"""Sweep hosts under attack (issue 14, items 1 and 2): a peer without the secret can neither
make a host run its source nor join a sweep; a host with a wrong secret is refused both ways;
a host that forges its results is dropped and none of its numbers is ranked. Every attacker
is a process of its own, over loopback, as in the issue."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from engine.actors._runtime import registered_names
from engine.actors.sweep import SweepError, open_history, parse_grid, rank, run_sweep
from engine.actors.sweep_auth import SecretError, load_secret
from tests.actors import sweep_eval
from tests.actors.procs import descendants, free_port, parent

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
EVALUATE = f"{sweep_eval.__file__}:evaluate"
STRATEGY = str(ROOT / "strategies" / "sma_cross.py")
SECRET = b"chaos-test-secret-3f9a1c77d2e04b18"
WRONG = b"chaos-test-secret-not-the-same-one"


def secret_file(path: Path, secret: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(secret + b"\n")
    path.chmod(mode)
    return path


def start(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=f, start_new_session=True,
                                env={**os.environ, **(env or {})})


def host_args(registry: str, bind: str, secret: Path, script: str | None = None) -> list[str]:
    head = [script] if script else ["-m", "engine.actors.sweep_host"]
    return [*head, "--registry", registry, "--bind", bind, "--workers", "1",
            "--secret-file", str(secret)]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=30)


def read(path: Path) -> str:
    return path.read_text()


async def wait_for(log: Path, text: str, proc: subprocess.Popen, within: float = 90) -> None:
    """Until `text` is in the process's log (it reports on its own pace, not ours)."""
    with trio.fail_after(within):
        while text not in read(log):
            assert proc.poll() is None, read(log)
            await trio.sleep(0.1)


class Heard(logging.Handler):
    """Sets `event` when a record of the sweep's logger says `text`."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.event = text, trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


async def rogue(*args: str) -> str:
    out = await trio.run_process([sys.executable, str(HERE / "rogue_peer.py"), *args],
                                 cwd=ROOT, capture_stdout=True, capture_stderr=True,
                                 check=False)
    text = out.stdout.decode()
    assert out.returncode == 0, (text, out.stderr.decode()[-2000:])
    assert text.startswith("refused"), text
    return text


def expected(grid, shms):
    tokens = {s: shm.token.model_dump() for s, shm in shms.items()}
    return [sweep_eval.evaluate(STRATEGY, p, tokens, {}) | {"in_place": 1.0} for p in grid]


async def test_a_peer_without_the_secret_cannot_make_a_host_run_its_source(tmp_path):
    registry = f"127.0.0.1:{free_port()}"
    bind = f"127.0.0.2:{free_port('127.0.0.2')}"
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    marker = tmp_path / "pwned"
    log = tmp_path / "host.log"
    host = start(host_args(registry, bind, secret_file(tmp_path / "s", SECRET)), log,
                 env={"TMPDIR": str(host_tmp)})
    try:
        await wait_for(log, "ready", host)
        await rogue("send-source", bind, "--marker", str(marker))
        await rogue("send-source", bind, "--marker", str(marker),
                    "--secret-file", str(secret_file(tmp_path / "w", WRONG)))
        assert not marker.exists(), "the host ran the rogue's source"
        assert list(host_tmp.iterdir()) == [], "the host wrote the rogue's source"
        text = log.read_text()
        assert "refused a connection from 127.0.0.1" in text
        assert "no key proof" in text
        assert "wrong key proof" in text
        # The secret is nowhere a process listing shows, nor in the log.
        for pid in [host.pid, *descendants(host.pid)]:
            assert SECRET.decode() not in read(Path(f"/proc/{pid}/cmdline"))
        assert SECRET.decode() not in text

        # Still serving the holder of the secret.
        grid = parse_grid(["fast=4,8", "slow=20"])
        with open_history(sweep_eval.history(rows=2000)) as shms:
            want = expected(grid, shms)
            with trio.fail_after(90):
                rows = await run_sweep(STRATEGY, grid, shms, workers=0, evaluate=EVALUATE,
                                       registry=registry, hosts=1, host_timeout=60,
                                       secret=SECRET)
        assert [r["metrics"] for r in rows] == want
        assert {parent(int(r["worker"].rsplit(":", 1)[1])) for r in rows} == {host.pid}
    finally:
        stop(host)
    assert "Traceback" not in log.read_text()


async def test_no_peer_without_the_secret_joins_a_sweep(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="engine.actors.sweep")
    port = free_port()
    registry = f"127.0.0.1:{port}"
    log = tmp_path / "host.log"
    # A real host whose secret differs.
    host = start(host_args(registry, f"127.0.0.2:{free_port('127.0.0.2')}",
                           secret_file(tmp_path / "w", WRONG)), log)
    grid = parse_grid(["fast=4", "slow=20"])
    try:
        with open_history(sweep_eval.history(rows=500)) as shms:
            async with trio.open_nursery() as nursery:
                failed = []

                async def coordinator() -> None:
                    try:
                        await run_sweep(STRATEGY, grid, shms, workers=0, evaluate=EVALUATE,
                                        registry=registry, hosts=1, host_timeout=120,
                                        secret=SECRET)
                    except SweepError as exc:
                        failed.append(exc)

                nursery.start_soon(coordinator)
                await wait_for(log, "refused our key", host)
                await rogue("register", registry)
                # Asked with the sweep's own key: nobody got into the registry.
                names = await registered_names(("127.0.0.1", port))
                assert not [n for n in names if n.startswith("sweep.host.")], names
                nursery.cancel_scope.cancel()
            assert not failed
    finally:
        stop(host)
    refusals = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("refused a connection from 127.0.0.")]
    assert any("wrong key proof" in m for m in refusals), refusals
    assert any("no key proof" in m for m in refusals), refusals
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("forge", ["top", "inf"])
async def test_a_host_forging_its_results_is_dropped_and_never_ranked(tmp_path, caplog, forge):
    caplog.set_level(logging.INFO, logger="engine.actors.sweep")
    registry = f"127.0.0.1:{free_port()}"
    secret = secret_file(tmp_path / "s", SECRET)
    forger_log, honest_log = tmp_path / "forger.log", tmp_path / "honest.log"
    forger = start(host_args(registry, f"127.0.0.2:{free_port('127.0.0.2')}", secret,
                             script=str(HERE / "forging_host.py")), forger_log,
                   env={"FORGE": forge})
    honest = None
    grid = parse_grid(["fast=2:10:2", "slow=30"])
    dropped = Heard("refused:")
    logging.getLogger("engine.actors.sweep").addHandler(dropped)
    try:
        with open_history(sweep_eval.history(rows=2000)) as shms:
            want = expected(grid, shms)
            with trio.fail_after(240):
                async with trio.open_nursery() as nursery:
                    rows = []

                    async def coordinator() -> None:
                        # No local workers and one host: the forger takes the first jobs.
                        rows.extend(await run_sweep(
                            STRATEGY, grid, shms, workers=0, evaluate=EVALUATE,
                            registry=registry, hosts=1, host_timeout=90, secret=SECRET,
                            rank_by="sharpe", seed=1))

                    nursery.start_soon(coordinator)
                    await dropped.event.wait()
                    # The forger is dropped; an honest host takes its jobs back.
                    honest = start(host_args(registry, f"127.0.0.3:{free_port('127.0.0.3')}",
                                             secret), honest_log)
        workers = {parent(int(r["worker"].rsplit(":", 1)[1])) for r in rows}
    finally:
        logging.getLogger("engine.actors.sweep").removeHandler(dropped)
        stop(forger)
        if honest is not None:
            stop(honest)
    assert [r["metrics"] for r in rows] == want
    assert workers == {honest.pid}, "a result of the forger was kept"
    assert rank(rows, "sharpe")[0]["metrics"]["sharpe"] == max(w["sharpe"] for w in want)
    why = next(r.getMessage() for r in caplog.records if "refused:" in r.getMessage())
    assert ("disagrees" if forge == "top" else "not a finite number") in why, why


def test_a_secret_file_others_can_read_is_refused_in_one_line(tmp_path, monkeypatch):
    loose = secret_file(tmp_path / "loose", SECRET, mode=0o644)
    with pytest.raises(SecretError, match=r"readable by others \(mode 0644\): run chmod 600"):
        load_secret(file=loose)
    short = secret_file(tmp_path / "short", b"tiny")
    with pytest.raises(SecretError, match="fewer than 16 bytes"):
        load_secret(file=short)
    monkeypatch.delenv("ENGINE_SWEEP_SECRET", raising=False)
    with pytest.raises(SecretError, match="set the environment variable ENGINE_SWEEP_SECRET"):
        load_secret()
    monkeypatch.setenv("SWEEP_KEY_FOR_TEST", SECRET.decode())
    assert load_secret(env="SWEEP_KEY_FOR_TEST") == SECRET
    assert load_secret(file=secret_file(tmp_path / "ok", SECRET)) == SECRET
    out = subprocess.run(
        [sys.executable, "-m", "engine.actors.sweep_host", "--registry", "127.0.0.1:1",
         "--secret-file", str(loose)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: sweep secret file")
    assert "Traceback" not in out.stderr
    assert SECRET.decode() not in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "engine.actors.sweep_host", "--registry", "10.1.2.3:1616",
         "--secret-file", str(tmp_path / "ok")], cwd=ROOT, capture_output=True, text=True,
        timeout=60)
    assert out.returncode == 2
    assert "give --bind" in out.stderr


async def test_a_sweep_across_hosts_without_a_secret_does_not_start():
    with open_history(sweep_eval.history(rows=100)) as shms:
        with pytest.raises(SweepError, match="needs the shared secret"):
            await run_sweep(STRATEGY, parse_grid(["fast=4", "slow=20"]), shms, workers=1,
                            evaluate=EVALUATE, registry=f"127.0.0.1:{free_port()}")
