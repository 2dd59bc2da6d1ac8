"""`serve --local` as a process: one log line per invocation, SIGTERM drains in-flight work
and exits 0; and `serve --arm-endpoint` against a separately started `emulator`."""
from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from redisflush.local.bus import LocalBus

from .conftest import Processes, cache_args, http_json, one_event, run_cli, wait_for, write_config

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(90)
def test_sigterm_finishes_in_flight_work_and_exits_0(procs: Processes, local_dir: Path,
                                                     tmp_path: Path) -> None:
    cache, rid = "slow-answers", "e2e-sigterm-1"
    # every ARM answer takes 0.75 s, so the FlushTrigger invocation is still in flight when
    # the POST arrives; its first status read is due a second after the POST, too far off
    # to wait for in the invocation: it schedules the chain's first poll message
    cfg = write_config(tmp_path / "emulator.json",
                       {"caches": {cache: {"duration": 0.5, "latency": 0.75}}})
    serve = procs.serve(local_dir, "--config", str(cfg))
    sent = run_cli(["send", "--local", *cache_args(cache), "--request-id", rid], local_dir)
    assert sent.returncode == 0 and sent.stdout.strip() == rid, sent.stderr
    wait_for(lambda: serve.cache_stats(cache).get("posts") == 1, 15, "the POST to arrive")
    serve.popen.send_signal(signal.SIGTERM)
    assert serve.wait(30) == 0, serve.stderr()
    log = serve.stderr()
    assert "received SIGTERM: finishing in-flight work" in log
    assert "Traceback" not in log

    lines = serve.invocation_lines()
    # the in-flight call ran to its end: the POST answer was recorded, not abandoned
    assert [(m["function"], m["request"], m["outcome"]) for m in lines] == \
        [("FlushTrigger", rid, "completed")], log
    assert int(lines[0]["ms"]) >= 700
    assert lines[0]["decision"].startswith(f"scheduled {rid}:poll:1 at ")  # what the app did
    assert log.index("received SIGTERM") < log.index(f"FlushTrigger request={rid}")
    stopped = re.search(r"^stopped after (\d+) invocations$", log, re.M)
    assert stopped and int(stopped.group(1)) == len(lines)
    with LocalBus(local_dir / "bus.sqlite") as bus:
        [poll] = bus.peek("redis-flush-polls")
        assert poll.message_id == f"{rid}:poll:1"
        assert bus.counts("redis-flush-requests")["active"] == 0

    # started again, it carries on from the recorded step to the one completion event
    again = procs.serve(local_dir, "--config", str(cfg))
    watch = run_cli(["watch", "--local", "--json", "--count", "1", "--timeout", "20"],
                    local_dir, timeout=40)
    assert watch.returncode == 0, watch.stderr
    event = one_event(watch.stdout)
    assert event["data"]["requestId"] == rid and event["data"]["status"] == "Succeeded"
    assert again.cache_stats(cache)["posts"] == 1

    again.popen.send_signal(signal.SIGINT)           # Ctrl-C drains the same way
    assert again.wait(30) == 0, again.stderr()
    polls = [m for m in again.invocation_lines() if m["function"] == "PollOrchestrator"]
    assert polls and all(m["request"] == rid and m["outcome"] == "completed" for m in polls)
    assert polls[-1]["decision"] == f"completed Succeeded ({cache})"


@pytest.mark.timeout(60)
def test_one_log_line_per_invocation(procs: Processes, local_dir: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "emulator.json", {"caches": {"log-*": {"duration": 0.5}}})
    serve = procs.serve(local_dir, "--config", str(cfg))
    rids = [f"e2e-log-{i}" for i in range(3)]
    senders = [procs.spawn(["send", "--local", "--wait", "--json", *cache_args(f"log-{i}"),
                            "--request-id", rid], local_dir, name=rid)
               for i, rid in enumerate(rids)]
    assert [s.wait(40) for s in senders] == [0, 0, 0]
    serve.popen.send_signal(signal.SIGTERM)
    assert serve.wait(30) == 0
    lines = serve.invocation_lines()
    stopped = re.search(r"^stopped after (\d+) invocations$", serve.stderr(), re.M)
    assert stopped and int(stopped.group(1)) == len(lines)
    for rid in rids:
        mine = [(m["function"], m["outcome"]) for m in lines if m["request"] == rid]
        # one FlushTrigger call (the POST), then one PollOrchestrator call per status poll
        assert mine[0] == ("FlushTrigger", "completed"), mine
        assert mine[1:] and all(f == ("PollOrchestrator", "completed") for f in mine[1:])
    assert {m["request"] for m in lines} == set(rids)


@pytest.mark.timeout(60)
def test_serve_against_a_separate_emulator(procs: Processes, local_dir: Path,
                                           tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "emulator.json",
                       {"caches": {"sep-*": {"outcome": "Failed"}, "ok-*": {}}})
    emulator = procs.spawn(["emulator", "--config", str(cfg), "--duration", "0.5"],
                           local_dir, name="emulator")
    url = wait_for(lambda: re.search(r"ARM emulator on (\S+)", emulator.stdout()), 20,
                   "the emulator to listen").group(1)
    serve = procs.serve(local_dir, "--arm-endpoint", url)
    assert serve.arm_url == url
    assert not (local_dir / "emulator.port").exists()   # serve started no emulator of its own

    ok = run_cli(["send", "--local", "--wait", "--json", *cache_args("ok-1")], local_dir)
    assert ok.returncode == 0 and one_event(ok.stdout)["data"]["status"] == "Succeeded"
    failed = run_cli(["send", "--local", "--wait", "--json", *cache_args("sep-1")], local_dir)
    assert failed.returncode == 1
    assert one_event(failed.stdout)["data"]["error"]["code"] == "InternalServerError"
    stats = http_json(f"{url}/_emulator/stats")
    assert stats["caches"]["ok-1"]["flushes"] == 1 and stats["caches"]["sep-1"]["flushes"] == 0
    assert stats["posts"] == 2

    emulator.popen.send_signal(signal.SIGTERM)
    assert emulator.wait(15) == 0


@pytest.mark.timeout(60)
def test_a_second_serve_on_one_local_dir_is_refused(procs: Processes, local_dir: Path,
                                                    tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "emulator.json", {"caches": {"one-*": {"duration": 0.5}}})
    first = procs.serve(local_dir, "--config", str(cfg))
    port_file = local_dir / "emulator.port"
    port = port_file.read_text()
    assert first.arm_url.endswith(f":{port}")

    for args in ([], ["--config", str(cfg)], ["--emulator-port", "0"]):
        second = run_cli(["serve", "--local", *args], local_dir, timeout=30)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0] == (f"error: another serve --local is running on {local_dir} "
                            f"(pid {first.pid}): stop it, or set REDISFLUSH_LOCAL_DIR to "
                            "another folder"), second.stderr
        assert second.stdout == ""
    # the first one is untouched: same port, and it still flushes
    assert port_file.read_text() == port and first.alive()
    result = run_cli(["send", "--local", "--wait", "--json", *cache_args("one-1")], local_dir)
    assert result.returncode == 0, result.stderr
    assert one_event(result.stdout)["data"]["status"] == "Succeeded"
    assert first.cache_stats("one-1")["posts"] == 1
    assert [m["function"] for m in first.invocation_lines()][0] == "FlushTrigger"

    # once it stops, the local dir is free again
    first.popen.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert procs.serve(local_dir, "--config", str(cfg)).arm_url == first.arm_url
