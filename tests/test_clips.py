"""LiveCC's clip rule, checked against a direct transcription of the rule's text,
plus sentence starts, speech rate and scene-aligned clips."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from curate.speech.clips import livecc_spans, previous_text, scene_clips, sentence_starts, speech_clips, word_stream
from curate.stages.segment import SegmentParams


def rule_as_written(e, min_clip_s, max_clip_s, max_gap_s):
    """The rule's words, line by line: "starting at word i, extend j = i+1, i+2, ...
    and stop at the first j where e[j] - e[i] > max_clip_s or e[j] - e[j-1] > max_gap_s;
    words i..j-1 form a clip if e[j-1] - e[i] >= min_clip_s; the next clip starts at j.
    When the words run out, the final run i..n-1 is a clip if e[n-1] - e[i] >= min_clip_s"."""
    clips, i = [], 0
    while i < len(e):
        j = i + 1
        while j < len(e) and not (e[j] - e[i] > max_clip_s or e[j] - e[j - 1] > max_gap_s):
            j += 1
        if e[j - 1] - e[i] >= min_clip_s:
            clips.append((i, j))
        i = j
    return clips


def livecc_clip4pretrain(ends, min_clip_sec, max_clip_sec, max_empty_sec):
    """LiveCC's clip loop (data/production/pretrain_to_clips.py, ``clip4pretrain``),
    transcribed statement for statement on word end times; returns (i, j) ranges
    of ``words[i:j]``."""
    words = [[None, e, None] for e in ends]
    clips, i = [], 0
    while i < len(words):
        j = None
        for j in range(i + 1, len(words)):
            if words[j][1] - words[i][1] > max_clip_sec:
                break
            if words[j][1] - words[j - 1][1] > max_empty_sec:
                break
        if j is not None and j > i and words[j - 1][1] - words[i][1] >= min_clip_sec:
            clips.append((i, j))
        if j is not None:
            i = j
        else:
            break
    return clips


def as_livecc_would(spans, n, ends, min_clip_s):
    """Our spans with the one documented difference undone: when the words run
    out, LiveCC's ``for`` loop leaves j at the last word, so its final clip is
    words[i:n-1] (the video's last word left out), judged on e[n-2] - e[i]."""
    out = []
    for i, j in spans:
        if j == n:
            if n - 1 > i and ends[n - 2] - ends[i] >= min_clip_s:
                out.append((i, n - 1))
        else:
            out.append((i, j))
    return out


def test_gap_stops_a_clip():
    ends = [1, 2, 3, 4, 9, 10, 11, 20]  # gaps of 5 s after word 3, 9 s after word 6
    assert livecc_spans(ends, min_clip_s=2, max_clip_s=100, max_gap_s=3) == [(0, 4), (4, 7)]


def test_max_length_stops_a_clip_and_the_final_run_is_kept():
    ends = list(range(0, 30))  # a word every second, no gaps
    # From i=0 the first j with e[j]-e[0] > 10 is j=11: clip 0..10; then 11..21; the
    # words run out in 22..29 (7 s >= min 5): the final run is a clip, with its last word.
    assert livecc_spans(ends, min_clip_s=5, max_clip_s=10, max_gap_s=3) == [(0, 11), (11, 22), (22, 30)]
    assert livecc_clip4pretrain(ends, 5, 10, 3) == [(0, 11), (11, 22), (22, 29)]  # LiveCC: one word short


def test_a_video_that_never_stops_the_loop_is_one_clip():
    ends = [0, 1, 2, 3, 4, 5, 6]  # long enough, and nothing ever stops the loop
    assert livecc_spans(ends, min_clip_s=2, max_clip_s=100, max_gap_s=3) == [(0, 7)]
    assert livecc_spans(ends, min_clip_s=6.5, max_clip_s=100, max_gap_s=3) == []  # too short: dropped


def test_short_span_is_skipped_and_clipping_goes_on():
    ends = [0, 1, 10, 11, 12, 13, 14, 30]  # 0..1 is too short; 10..14 is kept; 30 alone is too short
    assert livecc_spans(ends, min_clip_s=3, max_clip_s=100, max_gap_s=3) == [(2, 7)]


def test_boundaries_are_inclusive_exactly_as_the_rule():
    # e[j]-e[i] == max is not "> max" (no stop); e[j-1]-e[i] == min is ">= min" (kept).
    assert livecc_spans([0, 5, 10, 20], min_clip_s=10, max_clip_s=10, max_gap_s=5) == [(0, 3)]
    assert livecc_spans([], 1, 2, 3) == [] and livecc_spans([1.0], 1, 2, 3) == []
    assert livecc_spans([1.0], 0, 2, 3) == [(0, 1)]  # min 0: a lone word spans 0 s >= 0


def random_stream(rng: random.Random) -> list[float]:
    """Word end times: gaps around the limits, ties, long monologues, empty streams."""
    kind = rng.choice(["empty", "short", "gappy", "ties", "monologue"])
    n = {"empty": 0, "short": rng.randint(1, 4), "gappy": rng.randint(5, 80), "ties": rng.randint(5, 80),
         "monologue": rng.randint(300, 1500)}[kind]
    ends, t = [], rng.uniform(0, 5)
    for _ in range(n):
        if kind == "ties":
            t += rng.choice([0.0, 0.0, 0.5, 1.0, 3.0, 3.5])
        elif kind == "monologue":
            t += rng.choice([0.2, 0.3, 0.4, 0.5]) if rng.random() > 0.002 else 3.5
        else:
            t += rng.choice([0.2, 0.3, 0.5, 1.0, 2.9, 3.0, 3.1, 6.0, rng.uniform(0, 8)])
        ends.append(round(t, rng.choice([1, 3])))
    return sorted(ends)  # rounding may swap neighbours; the rule reads sorted ends


def test_matches_livecc_on_thousands_of_random_word_streams():
    """Property test against a literal transcription of LiveCC's loop: every clip
    equals LiveCC's, except the documented last-word difference."""
    rng = random.Random(11)
    kept = 0
    for _ in range(3000):
        ends = random_stream(rng)
        params = dict(min_clip_s=rng.choice([0, 2, 5, 10, 30]), max_clip_s=rng.choice([10, 20, 40, 240]),
                      max_gap_s=rng.choice([1.0, 3.0]))
        if params["min_clip_s"] > params["max_clip_s"]:
            continue
        ours = livecc_spans(ends, **params)
        assert ours == rule_as_written(ends, **params)
        theirs = livecc_clip4pretrain(ends, params["min_clip_s"], params["max_clip_s"], params["max_gap_s"])
        assert as_livecc_would(ours, len(ends), ends, params["min_clip_s"]) == theirs, (ends, params)
        kept += len(ours)
    assert kept > 3000  # the streams do make clips


def test_a_long_monologue_keeps_nearly_every_word():
    rng = random.Random(5)
    ends, t = [], 0.0
    for _ in range(1800):  # ten minutes at 3 words/s, no pause over 3 s
        t += rng.uniform(0.2, 0.45)
        ends.append(t)
    spans = livecc_spans(ends, min_clip_s=30, max_clip_s=240, max_gap_s=3)
    assert sum(j - i for i, j in spans) == len(ends)  # every word is in a clip


def _words(spec):
    return [{"start_s": s, "end_s": e, "text": x, "prob": 1.0} for s, e, x in spec]


def test_speech_clips_carry_words_text_and_rate():
    words = _words([(0.0, 0.5, "Hello"), (0.6, 1.0, "there."), (1.2, 2.0, "This"), (2.1, 3.0, "works."),
                    (9.0, 9.5, "Later.")])
    [clip] = speech_clips(words, min_clip_s=2, max_clip_s=60, max_gap_s=3)
    assert (clip.start, clip.end, clip.n_words, clip.text) == (0.0, 3.0, 4, "Hello there. This works.")
    assert clip.words_per_second == pytest.approx(4 / (3.0 - 0.5))  # n / (e[last] - e[first])


def test_sentence_start_moves_the_clip_start():
    words = _words([(0, 1, "Start"), (1, 2, "here."), (2, 3, "and"), (3, 4, "then"),
                    (10, 11, "cut"), (11, 12, "off."), (12, 13, "Fresh"), (13, 14, "start"), (14, 15, "now."),
                    (15, 16, "End."), (30, 31, "x")])
    assert sentence_starts(words)[:3] == [True, False, True]
    plain = speech_clips(words, min_clip_s=2, max_clip_s=60, max_gap_s=3)
    assert [c.text for c in plain] == ["Start here. and then", "cut off. Fresh start now. End."]
    aligned = speech_clips(words, min_clip_s=2, max_clip_s=60, max_gap_s=3, sentence_start=True)
    assert [c.text for c in aligned] == ["Start here. and then", "Fresh start now. End."]


def test_scene_clips_merge_tiny_and_split_long_scenes():
    clips = scene_clips([1.0, 10.0, 40.0], duration=41.0, words=[], min_clip_s=5, max_clip_s=12)
    spans = [(round(c.start, 3), round(c.end, 3)) for c in clips]
    # 0-1 is tiny: merged into 0-10. 10-40 (30 s) splits in 3. The 1 s tail joins the last clip (40-41).
    assert spans == [(0, 10), (10, 20.333), (20.333, 30.667), (30.667, 41.0)]


def test_scene_clips_take_words_by_their_middle():
    words = _words([(9.8, 10.4, "edge"), (12, 13, "inside")])
    first, second = scene_clips([10.0], duration=20.0, words=words, min_clip_s=5, max_clip_s=30)
    assert [w["text"] for w in first.words] == [] and [w["text"] for w in second.words] == ["edge", "inside"]


def test_params_refuse_bad_recipes():
    with pytest.raises(ValidationError, match="min_clip_s"):
        SegmentParams(min_clip_s=50, max_clip_s=20)
    with pytest.raises(ValidationError, match="extra"):
        SegmentParams(max_clip=20)
    with pytest.raises(ValidationError):
        SegmentParams(threshold=-1)


def test_previous_is_the_words_before_the_clip_by_position():
    # The second clip starts with a zero-length word ("Now") whose end equals the
    # clip's start: by time it would count as "previous"; by position it is the clip's.
    words = _words([(0, 1, "One"), (1, 2, "two"), (2, 3, "three."), (8.0, 8.0, "Now"), (8.0, 9, "four"),
                    (9, 10, "five"), (10, 11, "six.")])
    first, second = speech_clips(words, min_clip_s=2, max_clip_s=60, max_gap_s=3)
    assert (second.start, second.words[0]["text"]) == (8.0, "Now")
    stream = word_stream(words)
    assert previous_text(stream, first.first, 0) == ""
    assert previous_text(stream, second.first, 0) == "One two three."
    assert previous_text(stream, second.first, 2) == "two three."
    # Scene clips: the words before the clip's first word too, and all earlier words for a wordless clip.
    a, b, c = scene_clips([4.0, 7.5], duration=12.0, words=words, min_clip_s=3, max_clip_s=60)
    assert previous_text(stream, b.first, 0) == "One two three." and b.words == []
    assert previous_text(stream, c.first, 0) == "One two three." and c.words[0]["text"] == "Now"
