"""Scene cuts on the demo corpus: within one frame of the truth, none where there is none."""

from __future__ import annotations

import json

import pytest

from curate.demo.corpus import DEMO_DATA, make_silent_video
from curate.media.decode import iter_frames
from curate.media.scenes import SceneCutter

DEMOS = sorted(p.stem.split(".")[0] for p in DEMO_DATA.glob("*.truth.json"))
# The demo recipe's threshold: one demo cut (purple triangle -> blue square on dark
# backgrounds) scores ~21, under PySceneDetect's default 27; static frames score < 0.01.
DEMO_THRESHOLD = 15.0


def detect(path, skip_nonref: bool = False, **kwargs) -> tuple[list[float], float]:
    info, frames = iter_frames(path, sample_fps=1.0, skip_nonref=skip_nonref)
    cutter = SceneCutter(fps_hint=info.fps, **kwargs)
    for f in frames:
        cutter.add(f.pts, f.time_base, f.small)
    return cutter.finish(), info.fps


@pytest.mark.parametrize("name", DEMOS)
@pytest.mark.parametrize("detector", ["content", "adaptive"])
def test_demo_cuts_within_one_frame_of_truth(name, detector):
    truth = json.loads((DEMO_DATA / f"{name}.truth.json").read_text())
    cuts, fps = detect(DEMO_DATA / f"{name}.mp4", detector=detector, threshold=DEMO_THRESHOLD)
    assert len(cuts) == len(truth["cuts"]), (cuts, truth["cuts"])  # no cut inside a static scene
    assert cuts == pytest.approx(truth["cuts"], abs=1.0 / fps + 1e-6)


@pytest.mark.parametrize("name", DEMOS)
def test_skipping_non_reference_frames_keeps_cuts_within_one_frame(name):
    """The segment stage's default pass (skip_nonref with ContentDetector): about half the frames
    decoded, every cut still within one frame of the truth and of the full decode's."""
    truth = json.loads((DEMO_DATA / f"{name}.truth.json").read_text())["cuts"]
    full, fps = detect(DEMO_DATA / f"{name}.mp4", threshold=DEMO_THRESHOLD)
    info, frames = iter_frames(DEMO_DATA / f"{name}.mp4", sample_fps=1.0, skip_nonref=True)
    cutter = SceneCutter(fps_hint=info.fps, threshold=DEMO_THRESHOLD)
    decoded = 0
    for f in frames:
        cutter.add(f.pts, f.time_base, f.small)
        decoded += 1
    skipped = cutter.finish()
    assert frames.skipped > 0.3 * (decoded + frames.skipped)  # the lever is real on these files
    assert len(skipped) == len(truth) == len(full)
    assert skipped == pytest.approx(truth, abs=1.0 / fps + 1e-6)
    assert skipped == pytest.approx(full, abs=1.0 / fps + 1e-6)


def test_two_frames_left_out_in_a_row_turn_skipping_off(tmp_path):
    """B-frames without a pyramid come three in a row, none a reference: skipping them could put a
    cut three frames late, so the decoder goes back to every frame and the cut is exact again."""
    import subprocess

    path = tmp_path / "flat_b.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=red:s=320x240:r=25:d=2.0", "-f", "lavfi", "-i", "color=c=blue:s=320x240:r=25:d=2.0",
                    "-filter_complex", "[0][1]concat=n=2:v=1:a=0", "-c:v", "libx264",
                    "-x264-params", "bframes=3:b-pyramid=0:b-adapt=0:scenecut=0", "-pix_fmt", "yuv420p", str(path)],
                   check=True)
    _, frames = iter_frames(path, sample_fps=1.0, skip_nonref=True)
    times = [f.t for f in frames]
    assert frames.skip_stopped_s is not None and frames.skip_stopped_s < 0.5
    assert len(times) + frames.skipped == 100  # every frame decoded or counted as left out
    # Every frame from the next packets on (those the decoder holds for reordering, a few, were sent before).
    after = frames.skip_stopped_s + 0.2
    assert [t for t in times if t > after] == pytest.approx([k / 25 for k in range(100) if k / 25 > after + 1e-9])
    assert detect(path, skip_nonref=True)[0] == pytest.approx([2.0], abs=1e-3)


def test_static_talking_scene_has_no_cut(tmp_path):
    video = make_silent_video(tmp_path / "static.mp4", 6.0)
    assert detect(video)[0] == []
    assert detect(video, detector="adaptive")[0] == []


def test_cut_time_is_real_on_variable_frame_rate_video(tmp_path):
    import subprocess

    # 10 fps until 2 s then 30 fps; the cut is at 2.5 s. Counting frames at the
    # average rate would put it near 1.2 s.
    path = tmp_path / "vfr.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=red:s=320x240:r=30:d=2.5", "-f", "lavfi", "-i", "color=c=blue:s=320x240:r=30:d=1.5",
                    "-filter_complex", "[0][1]concat=n=2:v=1:a=0,select='gte(t\\,2)+not(mod(n\\,3))'",
                    "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    assert detect(path)[0] == pytest.approx([2.5], abs=1e-3)
    # Skipping non-reference frames: the 30 fps part's cut at most one frame late.
    assert detect(path, skip_nonref=True)[0] == pytest.approx([2.5], abs=1 / 30 + 1e-3)


def test_threshold_and_min_scene_len_come_from_params(tmp_path):
    name = DEMOS[0]
    # A threshold above any frame difference finds nothing; a long min_scene_len keeps only spaced cuts.
    assert detect(DEMO_DATA / f"{name}.mp4", threshold=255)[0] == []
    truth = json.loads((DEMO_DATA / f"{name}.truth.json").read_text())["cuts"]
    assert len(detect(DEMO_DATA / f"{name}.mp4", min_scene_len_s=15.0)[0]) < len(truth)
    with pytest.raises(ValueError, match="unknown scene detector"):
        SceneCutter(detector="histogram")


def test_the_fast_content_score_is_pyscenedetects_to_the_last_bit():
    """curate's ContentDetector scores each frame in fewer passes; the scores (and so the cuts)
    must be PySceneDetect's own, exactly, on every frame of every demo video."""
    from scenedetect.common import FrameTimecode
    from scenedetect.detectors import ContentDetector

    from curate.media.scenes import fast_content_detector

    compared = 0
    for name in DEMOS:
        _, frames = iter_frames(DEMO_DATA / f"{name}.mp4", sample_fps=1.0)
        theirs, ours = ContentDetector(), fast_content_detector()
        tc = FrameTimecode(timecode=0, fps=25.0)
        for f in frames:
            assert ours._calculate_frame_score(tc, f.small) == theirs._calculate_frame_score(tc, f.small)
            compared += 1
    assert compared > 3000
