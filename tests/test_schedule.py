"""Which (stage, shard) units may run: streaming, barriers, failures (no Ray)."""

from __future__ import annotations

from curate.run.schedule import ShardSchedule, StageNode, State

PIPELINE = [StageNode("crawl", (), False), StageNode("transcribe", ("crawl",), False),
            StageNode("segment", ("transcribe", "crawl"), False), StageNode("dedup", ("segment",), True),
            StageNode("annotate", ("dedup", "segment"), False)]


def _schedule(shards=3, up_to_date=(), missing=()):
    calls = []

    def decide(stage, unit):
        calls.append((stage, unit))
        if (stage, unit) in missing:
            return None
        return (stage, unit) not in up_to_date
    return ShardSchedule(PIPELINE, shards, decide), calls


def _run(sched, stage, ok=True):
    unit = sched.take(stage)
    sched.finished(stage, unit, ok)
    return unit


def test_a_shard_moves_on_as_soon_as_its_upstream_shard_is_done():
    sched, _ = _schedule()
    assert list(sched.ready["crawl"]) == [0, 1, 2] and not sched.has_ready("transcribe")
    assert _run(sched, "crawl") == 0
    # crawl shards 1 and 2 are still to run, yet transcribe shard 0 may start
    assert list(sched.ready["transcribe"]) == [0] and sched.count("crawl", State.READY) == 2
    _run(sched, "transcribe")
    assert list(sched.ready["segment"]) == [0]


def test_a_global_stage_waits_for_every_shard_and_the_next_stage_waits_for_it():
    sched, _ = _schedule(shards=2)
    for stage in ("crawl", "crawl", "transcribe", "transcribe", "segment"):
        _run(sched, stage)
    assert not sched.has_ready("dedup")  # segment shard 1 is not done
    _run(sched, "segment")
    assert list(sched.ready["dedup"]) == [None] and not sched.has_ready("annotate")
    _run(sched, "dedup")
    assert list(sched.ready["annotate"]) == [0, 1]


def test_a_failed_shard_blocks_only_what_reads_it():
    sched, _ = _schedule(shards=2)
    _run(sched, "crawl", ok=False)  # shard 0
    assert sched.settled("transcribe", 0) is State.BLOCKED and sched.settled("segment", 0) is State.BLOCKED
    _run(sched, "crawl")
    _run(sched, "transcribe")
    assert sched.settled("transcribe", 1) is State.DONE and list(sched.ready["segment"]) == [1]
    _run(sched, "segment")
    # dedup reads every shard: it cannot run, nor can anything after it
    assert sched.settled("dedup", None) is State.BLOCKED
    assert sched.count("annotate", State.BLOCKED) == 2 and sched.finished_all()


def test_up_to_date_units_are_decided_at_once_and_never_run():
    done = {("crawl", 0), ("transcribe", 0), ("segment", 0)}
    sched, calls = _schedule(shards=2, up_to_date=done)
    assert sched.settled("segment", 0) is State.UP_TO_DATE and list(sched.ready["crawl"]) == [1]
    assert ("transcribe", 1) not in calls  # not decided before its input shard settles


def test_a_missing_input_marker_blocks_the_unit():
    sched, _ = _schedule(shards=1, up_to_date={("crawl", 0)}, missing={("transcribe", 0)})
    assert sched.settled("transcribe", 0) is State.BLOCKED and sched.finished_all()


def test_an_abandoned_stage_fails_its_units_now_and_later():
    sched, _ = _schedule(shards=2)
    _run(sched, "crawl")
    sched.take("transcribe")
    gone = sched.abandon("transcribe")
    assert gone == [0]
    _run(sched, "crawl")  # transcribe shard 1 comes due: it fails rather than wait forever
    assert sched.settled("transcribe", 1) is State.FAILED and sched.finished_all()
