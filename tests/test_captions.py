"""Caption parsing on real-world shapes (hand-written fixtures in tests/fixtures/captions/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate.speech.captions import CaptionParseError, clean_text, parse_caption_file, parse_caption_text, words_text

FIXTURES = Path(__file__).parent / "fixtures" / "captions"


def texts(words):
    return [w["text"] for w in words]


def test_rolling_auto_captions_with_word_times_collapse_repeats():
    words = parse_caption_file(FIXTURES / "rolling_auto.en.vtt", kind="auto")
    # every spoken word once, [Music] skipped; the speaker's own "the the" is kept
    assert words_text(words) == "so today we're going to fix the bike chain the the chain is loose"
    by_text = {w["text"]: w for w in words}
    assert (by_text["today"]["start_s"], by_text["today"]["end_s"]) == (1.74, 2.1)  # inline <00:00:01.740>
    assert words[0]["start_s"] == 1.5  # the untimed first word starts with its cue
    assert all(w["prob"] is None for w in words)


def test_rolling_plain_captions_collapse_repeated_lines():
    words = parse_caption_file(FIXTURES / "rolling_plain.en.vtt", kind="auto")
    assert words_text(words) == "first we remove the wheel and then we loosen the two bolts"
    # untimed cue: 2 s over 5 words, spread evenly
    assert [(w["start_s"], w["end_s"]) for w in words[:5]] == [(1.0, 1.4), (1.4, 1.8), (1.8, 2.2), (2.2, 2.6), (2.6, 3.0)]


def test_overlapping_srt_cues_give_monotone_words_and_clean_text():
    words = parse_caption_file(FIXTURES / "overlapping.en.srt")
    assert texts(words) == ["Hello", "&", "welcome", "Thanks", "for", "having", "me"]  # >> and [applause] gone
    starts = [w["start_s"] for w in words]
    assert starts == sorted(starts)
    assert all(a["end_s"] <= b["start_s"] for a, b in zip(words, words[1:]))  # overlap clipped
    assert all(w["end_s"] >= w["start_s"] for w in words)


def test_manual_vtt_keeps_real_repetition_and_decodes_entities():
    words = parse_caption_file(FIXTURES / "manual.en.vtt")
    assert words_text(words) == 'Tighten the bolt "gently". No. No, the other one!'
    assert words[0]["start_s"] == 2.0  # [upbeat music] cue skipped


def test_json3_uses_word_offsets():
    words = parse_caption_file(FIXTURES / "auto.en.json3", kind="auto")
    assert texts(words) == ["now", "pump", "the", "tire", "to", "sixty", "psi"]
    assert [w["start_s"] for w in words] == [1.0, 1.4, 1.8, 2.0, 2.51, 2.81, 3.31]
    assert words[3]["end_s"] == 2.51  # the event lasts to 4.0 s on screen, but the next word starts at 2.51


def test_empty_caption_file_has_no_words_and_zero_bytes_is_an_error(tmp_path):
    assert parse_caption_file(FIXTURES / "empty.en.vtt") == []
    zero = tmp_path / "zero.en.vtt"
    zero.write_bytes(b"")
    with pytest.raises(CaptionParseError, match="empty"):
        parse_caption_file(zero)


@pytest.mark.parametrize("name, match", [
    ("garbled.en.vtt", "malformed vtt"),
    ("garbled.en.json3", "malformed json3"),
])
def test_garbled_files_raise_caption_parse_error(name, match):
    with pytest.raises(CaptionParseError, match=match):
        parse_caption_file(FIXTURES / name)


@pytest.mark.parametrize("text, fmt", [
    ("not a caption file at all", "vtt"),
    ("1\nthis is no timing line\nhello\n", "srt"),
    ('{"events": "nope"}', "json3"),
    ('[1, 2, 3]', "json3"),
    ("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhi\n", "sbv"),
])
def test_other_malformed_inputs(text, fmt):
    with pytest.raises(CaptionParseError):
        parse_caption_text(text, fmt)


def test_not_utf8_is_a_parse_error(tmp_path):
    path = tmp_path / "latin1.en.vtt"
    path.write_bytes("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(CaptionParseError, match="UTF-8"):
        parse_caption_file(path)


def test_clean_text():
    assert clean_text("<c.colorE5E5E5>&gt;&gt; [Music] rock &amp; roll</c>") == "rock & roll"
    assert clean_text(">> HOST: hi <b>there</b>") == "HOST: hi there"


def srt(*cues: tuple[float, float, str]) -> str:
    def stamp(t: float) -> str:
        ms = round(t * 1000)
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"
    return "".join(f"{k}\n{stamp(a)} --> {stamp(b)}\n{text}\n\n" for k, (a, b, text) in enumerate(cues, 1))


def test_annotations_per_kind_manual_keeps_the_words_auto_drops_the_cue():
    text = srt((0, 2, "[laughs] That's great"), (2, 4, "see you"))
    assert texts(parse_caption_text(text, "srt", kind="manual")) == ["That's", "great", "see", "you"]
    assert texts(parse_caption_text(text, "srt", kind="auto")) == ["see", "you"]  # LiveCC: the cue goes


def test_repeats_per_kind_manual_keeps_them_untimed_auto_collapses():
    text = srt((0, 2, "no no no way"))
    assert texts(parse_caption_text(text, "srt", kind="manual")) == ["no", "no", "no", "way"]
    collapsed = parse_caption_text(text, "srt", kind="auto")
    assert texts(collapsed) == ["no", "way"]
    assert [(w["start_s"], w["end_s"]) for w in collapsed] == [(0.0, 1.0), (1.0, 2.0)]  # the cue spread over 2 words
    timed = "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nno<00:00:00.500><c> no</c><00:00:01.000><c> way</c>\n"
    assert texts(parse_caption_text(timed, "vtt", kind="auto")) == ["no", "no", "way"]  # timed apart: two words


def test_overlapping_cues_never_interleave_nor_make_zero_length_words():
    # Two speakers: the second cue starts while the first is still on screen.
    text = srt((0, 4, "one two three four"), (2, 6, "five six"), (2, 6, "seven"), (6, 6, "eight nine"))
    for kind in ("manual", "auto"):
        words = parse_caption_text(text, "srt", kind=kind)
        assert texts(words) == ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
        assert [(w["start_s"], w["end_s"]) for w in words[:4]] == [(0, 0.5), (0.5, 1.0), (1.0, 1.5), (1.5, 2.0)]
        assert all(w["end_s"] > w["start_s"] for w in words)
        assert all(a["end_s"] <= b["start_s"] for a, b in zip(words, words[1:]))


def test_no_word_has_zero_length_on_random_cue_files():
    import random

    rng = random.Random(8)
    vocabulary = ["a", "b", "no", "yes", "[Music]", "the", "&amp;", ">>", "well"]
    for _ in range(400):
        cues, t = [], 0.0
        for _ in range(rng.randint(1, 12)):
            t = max(0.0, t + rng.choice([-1.0, -0.05, 0.0, 0.0, 0.01, 0.3, 1.0, 2.5]))
            length = rng.choice([0.0, 0.001, 0.05, 0.2, 1.0, 3.0])
            cues.append((round(t, 3), round(t + length, 3), " ".join(rng.choices(vocabulary, k=rng.randint(1, 8)))))
        for kind in ("manual", "auto"):
            words = parse_caption_text(srt(*cues), "srt", kind=kind)
            assert all(w["end_s"] > w["start_s"] for w in words), cues
            assert all(a["end_s"] <= b["start_s"] for a, b in zip(words, words[1:])), cues
