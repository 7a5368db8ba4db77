"""Real-world video traits on tiny generated files: rotation (display matrix),
non-square pixels, and one clock (the container's) for frames, audio and durations."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from curate.media.audio import decode_audio
from curate.media.decode import iter_frames
from curate.media.probe import probe


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True,
                   stdin=subprocess.DEVNULL)


def ffmpeg_frame(path: Path, width: int, height: int) -> np.ndarray:
    """The first frame as the ffmpeg CLI shows it (autorotated, scaled to the display size)."""
    out = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(path), "-frames:v", "1",
                          "-vf", f"scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                         check=True, capture_output=True, stdin=subprocess.DEVNULL).stdout
    return np.frombuffer(out, np.uint8).reshape(height, width, 3)


def ffprobe_frame_times(path: Path) -> list[float]:
    """Each video frame's time on the container's clock, as ffprobe reports it."""
    def run(*args: str) -> str:
        return subprocess.run(["ffprobe", "-v", "error", *args, str(path)], check=True, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL).stdout
    start = float(run("-show_entries", "format=start_time", "-of", "csv=p=0").strip())
    times = run("-select_streams", "v", "-show_entries", "frame=best_effort_timestamp_time", "-of", "csv=p=0")
    return [float(t.strip(",")) - start for t in times.split()]


def rotated(src: Path, dst: Path, degrees: int) -> Path:
    """``src`` remuxed with a display rotation, as phones write it (a display
    matrix): ``-display_rotation`` on ffmpeg 6+, the ``rotate`` tag before."""
    try:
        ffmpeg("-display_rotation:v:0", str(degrees), "-i", str(src), "-c", "copy", str(dst))
    except subprocess.CalledProcessError:
        ffmpeg("-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(dst))
    return dst


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fidelity")
    # A picture with an up and a left: testsrc2 has text and a gradient.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x96:r=25:d=1", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", str(folder / "plain.mp4"))
    rotated(folder / "plain.mp4", folder / "rot90.mp4", 90)
    rotated(folder / "plain.mp4", folder / "rot270.mp4", 270)
    # PAL-style anamorphic: 176x144 stored, pixel aspect 16:11, shown 256x144 (16:9).
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=176x144:r=25:d=1", "-vf", "setsar=16/11", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(folder / "sar.mp4"))
    # Video that starts 1.075 s after its audio (mp4 with an edit list; MPEG-TS with a non-zero start).
    for name, codecs in (("late.mp4", ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                                       "-fps_mode", "passthrough", "-c:a", "aac"]),
                         ("late.ts", ["-c:v", "mpeg2video", "-c:a", "mp2"])):
        ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=2", "-itsoffset", "1.075", "-f", "lavfi", "-i",
               "testsrc2=s=64x48:r=25:d=0.96", "-map", "1:v", "-map", "0:a", *codecs, str(folder / name))
    # Audio that starts 0.7 s after the video.
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=64x48:r=25:d=2", "-itsoffset", "0.7", "-f", "lavfi", "-i",
           "sine=f=300:d=1", "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", "-c:a", "aac", str(folder / "late_audio.mp4"))
    return folder


def first_sample(path: Path, short_side: int) -> np.ndarray:
    _, frames = iter_frames(path, sample_fps=1.0, sample_short_side=short_side)
    return next(f.sample for f in frames if f.sample is not None)


@pytest.mark.parametrize("name", ["rot90.mp4", "rot270.mp4"])
def test_rotated_video_gives_upright_frames_and_its_displayed_size(media, name):
    assert (probe(media / "plain.mp4").width, probe(media / "plain.mp4").height) == (160, 96)
    info = probe(media / name)
    assert (info.width, info.height) == (96, 160)  # crawl records the displayed (portrait) size
    sample = first_sample(media / name, short_side=96)
    assert sample.shape == (160, 96, 3)  # portrait, as a player shows it
    shown = ffmpeg_frame(media / name, 96, 160)  # the ffmpeg CLI turns it upright itself
    assert np.abs(sample.astype(int) - shown).mean() < 8
    wrong_way = np.rot90(sample, 2)  # the same picture upside down is far off: the test can tell
    assert np.abs(wrong_way.astype(int) - shown).mean() > 40


def test_non_square_pixels_give_frames_at_the_display_aspect(media):
    info = probe(media / "sar.mp4")
    assert (info.width, info.height) == (256, 144)  # 176 * 16/11 = 256: displayed 16:9
    sample = first_sample(media / "sar.mp4", short_side=72)
    assert sample.shape == (72, 128, 3)  # 16:9, not 176:144
    assert np.abs(sample.astype(int) - ffmpeg_frame(media / "sar.mp4", 128, 72)).mean() < 8


@pytest.mark.parametrize("name", ["late.mp4", "late.ts"])
def test_frame_times_are_on_the_container_clock(media, name):
    """Each frame's time equals ffprobe's time for it on the container's clock
    (presentation time minus the container's start) within one frame."""
    _, frames = iter_frames(media / name, sample_fps=1.0)
    times = [f.t for f in frames]
    expected = ffprobe_frame_times(media / name)
    assert len(times) == len(expected) == 24
    assert expected[0] > 1.0  # the video really starts late
    assert times == pytest.approx(expected, abs=1 / 25)
    # Crawl's probe and the decode pass measure the same duration on that clock.
    decoded = times[-1] + 1 / 25
    assert probe(media / name).duration_s == pytest.approx(decoded, abs=1 / 25)


def test_audio_that_starts_late_keeps_its_offset(media):
    samples = decode_audio(media / "late_audio.mp4")
    loud = np.flatnonzero(np.abs(samples) > 0.05)
    assert loud[0] / 16_000 == pytest.approx(0.7, abs=0.03)  # on the container clock, like the frames


def test_segment_writes_upright_display_aspect_jpegs(media, tmp_path):
    from curate.stages.segment import SegmentParams, decode_video

    for name, shape in (("rot90.mp4", (160, 96)), ("sar.mp4", (144, 256))):
        decoded = decode_video(name.split(".")[0], media / name, tmp_path,
                               SegmentParams(mode="scene", frame_short_side=96 if name == "rot90.mp4" else 144))
        jpeg = cv2.imread(str(tmp_path / decoded.frames[0]["path"]))
        assert jpeg.shape[:2] == shape


def test_crawl_records_the_displayed_size_and_segments_clock(media, tmp_path):
    """Through the loopback site and yt-dlp: crawl measures the file as a player
    shows it, and its duration equals what segment decodes; the site serves
    Matroska, WebM and MPEG-PS files as well as mp4."""
    import shutil

    import pyarrow as pa

    from curate.demo.site import DemoSite
    from curate.stages.base import StageContext, run_stage_on_table
    from curate.stages.crawl import CrawlParams, CrawlStage
    from curate.stages.segment import SegmentParams, decode_video

    site_dir = tmp_path / "site"
    site_dir.mkdir()
    shutil.copy(media / "rot90.mp4", site_dir / "phone.mp4")
    ffmpeg("-i", str(media / "late.mp4"), "-c", "copy", str(site_dir / "late.mkv"))
    ffmpeg("-i", str(media / "sar.mp4"), "-c:v", "libvpx", "-b:v", "200k", "-deadline", "realtime",
           str(site_dir / "pal.webm"))
    ffmpeg("-i", str(media / "late.ts"), "-c", "copy", "-f", "vob", str(site_dir / "late_ps.mpg"))
    root = tmp_path / "catalog"
    with DemoSite([site_dir]) as site:
        assert set(site.video_names()) == {"phone", "late", "pal", "late_ps"}
        sources = [site.url(n) for n in ("phone", "late", "pal", "late_ps")]
        stage = CrawlStage(CrawlParams(sources=sources, retries=0), StageContext(root, root))
        stage.setup()
        try:
            rows = run_stage_on_table(stage, pa.table({"source": sources})).to_pylist()
        finally:
            stage.teardown()
    rows = {r["source"].rsplit("/", 1)[1]: r for r in rows}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["late"]["video_path"].endswith(".mkv") and rows["pal"]["video_path"].endswith(".webm")
    assert (rows["phone"]["width"], rows["phone"]["height"]) == (96, 160)
    assert (rows["pal"]["width"], rows["pal"]["height"]) == (256, 144)
    for name in ("late", "late_ps"):
        decoded = decode_video(name, root / rows[name]["video_path"], root, SegmentParams(mode="scene"))
        assert rows[name]["duration_s"] == pytest.approx(decoded.duration_s, abs=1 / 25)
        assert decoded.frames[0]["t"] > 1.0  # the first frame keeps its late start
