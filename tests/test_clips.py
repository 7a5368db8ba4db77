"""LiveCC's clip rule, checked against a direct transcription of the rule's text,
plus sentence starts, speech rate and scene-aligned clips."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from curate.speech.clips import livecc_spans, scene_clips, sentence_starts, speech_clips
from curate.stages.segment import SegmentParams


def rule_as_written(e, min_clip_s, max_clip_s, max_gap_s):
    """The issue's words, line by line: "starting at word i, extend j = i+1, i+2, ...
    and stop at the first j where e[j] - e[i] > max_clip_s or e[j] - e[j-1] > max_gap_s;
    words i..j-1 form a clip if e[j-1] - e[i] >= min_clip_s; the next clip starts at j
    (if no j stopped the loop, clipping ends)."""
    clips, i = [], 0
    while True:
        j = i + 1
        while j < len(e) and not (e[j] - e[i] > max_clip_s or e[j] - e[j - 1] > max_gap_s):
            j += 1
        if j >= len(e):  # no j stopped the loop
            return clips
        if e[j - 1] - e[i] >= min_clip_s:
            clips.append((i, j))
        i = j


def test_gap_stops_a_clip():
    ends = [1, 2, 3, 4, 9, 10, 11, 20]  # gaps of 5 s after word 3, 9 s after word 6
    assert livecc_spans(ends, min_clip_s=2, max_clip_s=100, max_gap_s=3) == [(0, 4), (4, 7)]


def test_max_length_stops_a_clip():
    ends = list(range(0, 30))  # a word every second, no gaps
    # From i=0 the first j with e[j]-e[0] > 10 is j=11: clip 0..10; then 11..21; the tail never stops.
    assert livecc_spans(ends, min_clip_s=5, max_clip_s=10, max_gap_s=3) == [(0, 11), (11, 22)]


def test_loop_ending_without_a_stop_drops_the_tail():
    ends = [0, 1, 2, 3, 4, 5, 6]  # long enough, but nothing ever stops the loop
    assert livecc_spans(ends, min_clip_s=2, max_clip_s=100, max_gap_s=3) == []


def test_short_span_is_skipped_and_clipping_goes_on():
    ends = [0, 1, 10, 11, 12, 13, 14, 30]  # 0..1 is too short; 10..14 is kept
    assert livecc_spans(ends, min_clip_s=3, max_clip_s=100, max_gap_s=3) == [(2, 7)]


def test_boundaries_are_inclusive_exactly_as_the_rule():
    # e[j]-e[i] == max is not "> max" (no stop); e[j-1]-e[i] == min is ">= min" (kept).
    assert livecc_spans([0, 5, 10, 20], min_clip_s=10, max_clip_s=10, max_gap_s=5) == [(0, 3)]
    assert livecc_spans([], 1, 2, 3) == [] and livecc_spans([1.0], 1, 2, 3) == []


@pytest.mark.parametrize("seed", range(200))
def test_matches_the_written_rule_on_random_word_streams(seed):
    rng = random.Random(seed)
    ends, t = [], 0.0
    for _ in range(rng.randint(0, 120)):
        t += rng.choice([0.2, 0.3, 0.5, 1.0, 2.9, 3.0, 3.1, 6.0])
        ends.append(round(t, 1))
    params = dict(min_clip_s=rng.choice([0, 2, 5, 10]), max_clip_s=rng.choice([10, 20, 40]),
                  max_gap_s=rng.choice([1.0, 3.0]))
    assert livecc_spans(ends, **params) == rule_as_written(ends, **params)


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
