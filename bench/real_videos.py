"""Real encoded files for the segment bench, made once with ffmpeg into a work folder.

No public test videos are reachable here (no internet; the installed
``scenedetect`` ships none), so these stand in for PySceneDetect's: four
different lavfi sources joined by hard cuts (moving content in each scene,
not a still), encoded with libx264's ordinary settings (CABAC, deblocking,
B-frames: what a downloaded file decodes like), in the shapes that stress a
decode pass: 1080p, 60 fps, variable frame rate, and a 600-frame GOP.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

SCENE_S = 5.0  # one source per scene, a hard cut between them
SOURCES = ("testsrc2", "mandelbrot", "smptebars", "life")


def _scenes(width: int, height: int, rate: int, seconds: float) -> tuple[list[str], str]:
    """ffmpeg inputs and a concat filter: the four sources in turn, ``SCENE_S`` each, until ``seconds``."""
    n = max(2, int(round(seconds / SCENE_S)))
    inputs = []
    for i in range(n):
        src = SOURCES[i % len(SOURCES)]
        extra = {"life": ":mold=10:ratio=0.1:death_color=#C83232:life_color=#00ff00",
                 "mandelbrot": ":maxiter=256"}.get(src, "")
        inputs += ["-f", "lavfi", "-t", str(SCENE_S), "-i", f"{src}=s={width}x{height}:r={rate}{extra}"]
    chain = "".join(f"[{i}:v]format=yuv420p,setsar=1[v{i}];" for i in range(n))
    return inputs, chain + "".join(f"[v{i}]" for i in range(n)) + f"concat=n={n}:v=1:a=0"


# name: (width, height, rate, seconds, extra filter after the concat, encoder options)
REAL = {
    "real_1080p30": (1920, 1080, 30, 20.0, "", ["-g", "60"]),
    "real_720p60": (1280, 720, 60, 20.0, "", ["-g", "120"]),
    # Every third frame dropped in some scenes, timestamps kept: a variable frame rate.
    "real_vfr": (854, 480, 30, 30.0, ",select='lt(mod(t\\,10)\\,5)+not(mod(n\\,3))'", ["-fps_mode", "vfr"]),
    # One keyframe in 600 frames, none forced at the cuts.
    "real_longgop": (1280, 720, 25, 40.0, "", ["-g", "600", "-keyint_min", "600", "-sc_threshold", "0"]),
}


def make_real_videos(workdir: Path) -> list[Path]:
    """The four files under ``workdir`` (made on first use, kept after)."""
    paths = []
    for name, (width, height, rate, seconds, post, opts) in REAL.items():
        path = workdir / f"{name}.mp4"
        if not path.exists():
            inputs, graph = _scenes(width, height, rate, seconds)
            tmp = path.with_suffix(".tmp.mp4")
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *inputs,
                            "-filter_complex", graph + post, "-c:v", "libx264", "-preset", "veryfast",
                            "-crf", "23", "-pix_fmt", "yuv420p", *opts, str(tmp)], check=True)
            tmp.rename(path)
        paths.append(path)
    return paths
