"""One PyAV pass: real timestamps (VFR), sampled frames, clear error codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from curate.demo.corpus import DEMO_DATA, make_corrupt_video
from curate.media.decode import DecodeError, iter_frames, scene_size


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory) -> Path:
    """Red for 2.5 s then blue for 1.5 s; only every 3rd frame kept before t=2 s, so
    the first 2 s run at 10 fps and the rest at 30 fps (variable frame rate)."""
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=320x240:r=30:d=2.5", "-f", "lavfi", "-i",
           "color=c=blue:s=320x240:r=30:d=1.5", "-filter_complex",
           "[0][1]concat=n=2:v=1:a=0,select='gte(t\\,2)+not(mod(n\\,3))'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    return path


def test_timestamps_come_from_pts_on_variable_frame_rate_video(vfr_video):
    _, frames = iter_frames(vfr_video, sample_fps=1.0)
    times = [f.t for f in frames]
    assert len(times) == 20 + 60  # 2 s at 10 fps + 2 s at 30 fps
    assert times[:3] == pytest.approx([0.0, 0.1, 0.2], abs=1e-3)
    assert times[20:23] == pytest.approx([2.0, 2.0 + 1 / 30, 2.0 + 2 / 30], abs=1e-3)


def test_one_pass_yields_small_frames_and_samples_at_the_rate(vfr_video):
    info, frames = iter_frames(vfr_video, sample_fps=2.0, sample_short_side=64)
    frames = list(frames)
    samples = [f for f in frames if f.sample is not None]
    assert [round(f.t, 3) for f in samples] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    assert all(f.small.shape == (192, 256, 3) for f in frames)  # 320 wide -> 256 wide, as scenedetect does
    assert samples[0].sample.shape == (64, 85, 3)  # short side 64, aspect kept
    assert (info.width, info.height) == (320, 240)


def ffprobe_video_end(path: Path) -> float:
    """Where the video stream's last packet ends (pts + duration) on the container's
    timeline (its start time subtracted), as ffprobe reads the packets."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "packet=pts_time,duration_time:format=start_time", "-of", "json", str(path)],
                         check=True, capture_output=True, text=True).stdout
    doc = json.loads(out)
    ends = [float(p["pts_time"]) + float(p.get("duration_time", 0)) for p in doc["packets"] if "pts_time" in p]
    return max(ends) - float(doc["format"].get("start_time", 0))


@pytest.fixture(scope="module")
def dropped_frames(tmp_path_factory) -> Path:
    """4 s of 30 fps video with frames dropped (every 3rd kept in the first second, none
    from 2 to 2.5 s, every 4th after 3.5 s: the last frames are 0.13 s apart, the average
    rate 19.2 fps), with audio that ends 1 s after the video or 1 s before it."""
    folder = tmp_path_factory.mktemp("dropped")
    keep = "(lt(t\\,1)*not(mod(n\\,3)))+between(t\\,1\\,2)+between(t\\,2.5\\,3.5)+(gt(t\\,3.5)*not(mod(n\\,4)))"
    for name, audio_s in (("audio_longer", 5), ("audio_shorter", 3)):
        ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x96:r=30:d=4", "-f", "lavfi", "-i", f"sine=f=300:d={audio_s}",
               "-filter_complex", f"[0:v]select='{keep}'[v]", "-map", "[v]", "-map", "1:a", "-fps_mode", "vfr",
               "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
               str(folder / f"{name}.mp4"))
    ffmpeg("-i", str(folder / "audio_longer.mp4"), "-c", "copy", str(folder / "audio_longer.mkv"))
    return folder


@pytest.mark.parametrize("name", ["audio_longer.mp4", "audio_shorter.mp4", "audio_longer.mkv"])
def test_crawl_and_segment_record_one_duration_the_video_streams_end(dropped_frames, name, tmp_path):
    """Crawl's duration_s and segment's video_duration_s are one number: where the video
    stream's last packet ends, not the audio's end, the container's duration or the last
    frame plus one average frame (issue 21: a VFR file had 10.01 s, 9.989 s and 9.968 s)."""
    from curate.media.probe import probe
    from curate.stages.segment import SegmentParams, decode_video

    path = dropped_frames / name
    end = ffprobe_video_end(path)
    assert 3.85 < end < 3.95  # the video: 4 s at 30 fps, its last frames dropped
    decoded = decode_video("v", path, tmp_path, SegmentParams(mode="scene"))
    assert decoded.duration_s == pytest.approx(end, abs=1e-6)
    assert probe(path).duration_s == round(decoded.duration_s, 3)
    # Frames were dropped (VFR), and the rule "last frame + 1 / average rate" would be off.
    info, frames = iter_frames(path, sample_fps=1.0)
    times = [f.t for f in frames]
    assert len(times) < 0.8 * 30 * end and frames.end_s == decoded.duration_s
    if name.endswith(".mp4"):  # (Matroska gives every frame the average rate's duration)
        assert abs(times[-1] + 1 / info.fps - end) > 0.004


def test_scene_frames_use_pyscenedetects_downscale_rule():
    assert scene_size(640, 360) == (256, 144)
    assert scene_size(1920, 1080) == (256, 144)
    assert scene_size(200, 100) == (200, 100)


def test_demo_video_samples_cover_the_whole_video():
    _, frames = iter_frames(DEMO_DATA / "demo_00.mp4", sample_fps=1.0)
    frames = list(frames)
    duration = frames[-1].t + 1 / 25
    assert sum(f.sample is not None for f in frames) == int(duration) + (duration % 1 > 0)


def test_audio_only_file_is_no_video(tmp_path):
    audio = tmp_path / "a.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=1", "-c:a", "aac", str(audio))
    with pytest.raises(DecodeError) as err:
        iter_frames(audio, sample_fps=1.0)
    assert err.value.code == "segment.no_video"


def test_empty_and_corrupt_files_have_their_own_codes(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DecodeError) as err:
        iter_frames(tmp_path / "empty.mp4", sample_fps=1.0)
    assert err.value.code == "segment.empty"
    corrupt = make_corrupt_video(DEMO_DATA / "demo_00.mp4", tmp_path / "corrupt.mp4")
    with pytest.raises(DecodeError) as err:
        _, frames = iter_frames(corrupt, sample_fps=1.0)
        list(frames)
    assert err.value.code == "segment.decode"


def test_abandoning_the_iterator_stops_the_decoder():
    import threading

    _, frames = iter_frames(DEMO_DATA / "demo_01.mp4", sample_fps=1.0, queue_size=2)
    next(frames)
    frames.close()  # e.g. the consumer hit an error: the producer thread must end
    assert not [t for t in threading.enumerate() if t.name.startswith("decode-demo_01")]
