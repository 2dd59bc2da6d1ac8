"""Replay: one classic cache behaves as it always did (same event, same ids)."""
from __future__ import annotations

from redisflush.core.commands import Note, Publish, Schedule

from .world import SUB, T0, World, accepted, by_path, rid, running, succeeded


def recorded_flush(polls_running: int = 2):
    """The recorded shape: 202 empty, N x 202 InProgress, 200 Succeeded."""
    seen = {"polls": 0}

    def poll(call, world):
        seen["polls"] += 1
        return running() if seen["polls"] <= polls_running else succeeded()
    return by_path({"/flush": lambda c, w: accepted(), "operationresults": poll})


def test_one_cache_one_post_one_event_same_ids():
    world = World(recorded_flush())
    state = world.run(world.request({"resourceId": rid("web")}))
    assert state.phase == "done"
    assert [c.method for c in world.calls] == ["POST", "GET", "GET", "GET"]
    events = world.published()
    assert len(events) == 1
    event = events[0]
    assert event["id"] == "req-1:completed"
    assert event["type"] == "RedisFlush.FlushCompleted"
    assert event["subject"] == "web"
    assert event["data"]["status"] == "Succeeded"
    assert event["data"]["armRequests"] == 4
    assert "batch" not in event["data"]
    ids = [s.message.message_id for s in world.scheduled]
    assert ids == [f"req-1:poll:{n}" for n in range(1, len(ids) + 1)]


def test_polls_at_most_one_per_second_without_retry_after():
    world = World(recorded_flush(polls_running=5))
    world.run(world.request({"resourceId": rid("web")}))
    times = [s.at for s in world.scheduled]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    assert gaps and min(gaps) >= 1.0
    assert (times[0] - T0).total_seconds() == 1.0


def test_retry_after_wins_over_the_cadence():
    def post(call, world):
        return accepted(**{"Retry-After": "7"})
    world = World(by_path({"/flush": post, "operationresults": lambda c, w: succeeded()}))
    world.run(world.request({"resourceId": rid("web")}))
    assert (world.scheduled[0].at - T0).total_seconds() == 7.0


def test_thirty_years_of_retry_after_parks_for_minutes_not_forever():
    def post(call, world):
        return accepted(**{"Retry-After": str(30 * 365 * 86400)})
    world = World(by_path({"/flush": post, "operationresults": lambda c, w: succeeded()}))
    world.run(world.request({"resourceId": rid("web"), "timeoutSeconds": 3600}))
    assert (world.scheduled[0].at - T0).total_seconds() == 300.0
    assert world.published()[0]["data"]["status"] == "Succeeded"


def test_progress_note_only_when_something_changed():
    seen = {"n": 0}

    def poll(call, world):
        seen["n"] += 1
        if seen["n"] <= 3:
            return running("InProgress")        # same status three times: one note
        if seen["n"] <= 5:
            return running("Flushing", percentComplete=50)  # a change: one more note
        return succeeded()
    world = World(by_path({"/flush": lambda c, w: accepted(), "operationresults": poll}))
    world.run(world.request({"resourceId": rid("web")}, reply_to="replies"))
    notes = [c for c in world.commands if isinstance(c, Note)]
    statuses = [__import__("json").loads(n.message.body)["data"]["status"] for n in notes]
    assert statuses == ["Accepted", "InProgress", "Flushing"]
    steps = [c for c in world.commands if isinstance(c, Schedule)]
    assert len(steps) > len(notes)  # not a note per step


def test_a_request_past_its_deadline_is_timed_out_without_a_post():
    world = World(by_path({}))
    enqueued = T0.replace(hour=11)  # waited an hour; the default timeout is 30 minutes
    state = world.run(world.request({"resourceId": rid("web")}, enqueued_at=enqueued))
    assert state.phase == "done"
    assert world.calls == []
    event = world.published()[0]
    assert event["data"]["status"] == "TimedOut"
    assert event["data"]["armRequests"] == 0


def test_reply_gets_the_final_event_in_its_session():
    world = World(recorded_flush(0))
    world.run(world.request({"resourceId": rid("web")}, reply_to="replies"))
    from redisflush.core.commands import Reply
    replies = [c for c in world.commands if isinstance(c, Reply)]
    assert len(replies) == 1 and replies[0].queue == "replies"
    assert replies[0].message.session_id == "req-1"
    assert [c for c in world.commands if isinstance(c, Publish)][0].message.message_id == \
        replies[0].message.message_id == "req-1:completed"
    assert SUB in replies[0].message.application_properties["subscriptionId"]


def test_reads_keep_their_cadence_whatever_arm_latency():
    """The next read is one gap after the previous one was sent: a slow answer (0.3 s) does
    not stretch the period to 1.3 s, and the gap never shrinks below one second of sends."""
    import datetime as dt
    from dataclasses import replace as with_
    seen = {"n": 0}

    def slow(answer, world):
        world.now += dt.timedelta(seconds=0.3)  # the answer comes back 0.3 s after the send
        return with_(answer, elapsed=0.3)

    def poll(call, world):
        seen["n"] += 1
        return slow(running() if seen["n"] < 3 else succeeded(), world)
    world = World(by_path({"/flush": lambda c, w: slow(accepted(), w),
                           "operationresults": poll}))
    world.run(world.request({"resourceId": rid("web")}))
    times = [(s.at - T0).total_seconds() for s in world.scheduled]
    assert times == [1.0, 2.0, 3.0]
