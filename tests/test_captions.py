"""Caption parsing on real-world shapes (hand-written fixtures in tests/fixtures/captions/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from curate.speech.captions import CaptionParseError, clean_text, parse_caption_file, parse_caption_text, words_text

FIXTURES = Path(__file__).parent / "fixtures" / "captions"


def texts(words):
    return [w["text"] for w in words]


def test_rolling_auto_captions_with_word_times_collapse_repeats():
    words = parse_caption_file(FIXTURES / "rolling_auto.en.vtt")
    # every spoken word once, [Music] skipped; the speaker's own "the the" is kept
    assert words_text(words) == "so today we're going to fix the bike chain the the chain is loose"
    by_text = {w["text"]: w for w in words}
    assert (by_text["today"]["start_s"], by_text["today"]["end_s"]) == (1.74, 2.1)  # inline <00:00:01.740>
    assert words[0]["start_s"] == 1.5  # the untimed first word starts with its cue
    assert all(w["prob"] is None for w in words)


def test_rolling_plain_captions_collapse_repeated_lines():
    words = parse_caption_file(FIXTURES / "rolling_plain.en.vtt")
    assert words_text(words) == "first we remove the wheel and then we loosen the two bolts"
    # untimed cue: 2 s over 5 words, spread evenly at 0.1 s resolution
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
    words = parse_caption_file(FIXTURES / "auto.en.json3")
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
