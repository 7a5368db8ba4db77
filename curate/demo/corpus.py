"""Deterministic generator of short "talking" demo videos with known truth.

Each video is a handful of scenes separated by hard cuts. A scene shows a
large coloured shape, its colour name and a topic word; the narration over it
talks about exactly that. Speech comes from espeak-ng, synthesised one word
at a time so that every word's start and end are known exactly (each word's
leading/trailing silence is trimmed at a fixed amplitude threshold, then the
words are laid out with fixed gaps). The outputs per video are:

- ``<name>.mp4``       H.264 + AAC, 320x240, 25 fps
- ``<name>.en.vtt``    WebVTT captions, one cue per sentence, with true times
- ``<name>.truth.json`` cut times, scenes, word times and the full script

Only ffmpeg, ffprobe and espeak-ng are needed (called with argument lists,
never through a shell). Same name + seed -> same script, same times.
"""

from __future__ import annotations

import io
import json
import math
import random
import re
import shutil
import tempfile
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import procs

DEMO_DATA: Path = Path(__file__).resolve().parent / "data"

WIDTH, HEIGHT, FPS = 320, 240, 25
SAMPLE_RATE = 22050  # espeak-ng's native rate; no resampling before encoding
VOICE, WORDS_PER_MINUTE = "en-us", 175
# A sample louder than this (about -40 dBFS) counts as speech when trimming a word.
SPEECH_THRESHOLD = 328
WORD_GAP_S = 0.08  # silence between words of one sentence
SENTENCE_GAP_S = 0.40  # silence between sentences
SCENE_LEAD_S = 0.5  # silence after a cut before the narration starts
SCENE_TAIL_S = 0.6  # silence after the narration before the next cut
MIN_SCENE_S, MAX_SCENE_S = 5.0, 11.0  # the longest narrations (e.g. "orange hexagon", "mountains") need ~10.3 s
MIN_VIDEO_S, MAX_VIDEO_S = 30.0, 45.0
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,100}")

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 90, 230),
    "green": (40, 180, 70),
    "yellow": (240, 210, 40),
    "orange": (245, 140, 30),
    "purple": (150, 60, 200),
    "white": (240, 240, 240),
    "brown": (150, 95, 45),
}
# Dark backgrounds so every shape stands out and every cut changes the whole frame.
BACKGROUNDS = [(20, 24, 48), (48, 20, 24), (18, 44, 30), (40, 36, 16), (30, 30, 30), (16, 38, 46)]
SHAPE_TRAITS = {
    "circle": "is round",
    "square": "has four sides",
    "triangle": "has three corners",
    "star": "has five points",
    "diamond": "is sharp",
    "hexagon": "has six sides",
}
TOPICS = ["apples", "boats", "music", "rivers", "mountains", "trains", "gardens", "bread", "windows", "rockets"]


@dataclass
class Scene:
    start: float
    end: float
    shape: str
    color: str
    topic: str
    narration: str


@dataclass
class Word:
    start: float
    end: float
    text: str


@dataclass
class Truth:
    name: str
    duration_s: float
    fps: int
    width: int
    height: int
    cuts: list[float] = field(default_factory=list)
    scenes: list[Scene] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    script: str = ""


# ---------------------------------------------------------------- script


def scene_sentences(shape: str, color: str, topic: str) -> list[str]:
    return [
        f"Here is {'an' if color[0] in 'aeiou' else 'a'} {color} {shape}.",
        f"This {color} {shape} {SHAPE_TRAITS[shape]}.",
        f"It makes me think of {topic}.",
    ]


def plan_scenes(seed: int, n_scenes: int) -> list[tuple[str, str, str]]:
    """(shape, color, topic) per scene; neighbours never share shape or colour."""
    rng = random.Random(seed)
    shapes = rng.sample(sorted(SHAPE_TRAITS), k=n_scenes)
    colors = rng.sample(sorted(COLORS), k=n_scenes)
    topics = rng.sample(TOPICS, k=n_scenes)
    return list(zip(shapes, colors, topics))


# ---------------------------------------------------------------- speech


def _require_tool(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise RuntimeError(f"{tool} not found on PATH: install it (e.g. `apt-get install {tool}`)")
    return found


def synthesize_word(word: str) -> np.ndarray:
    """One word as int16 mono samples at SAMPLE_RATE, silence trimmed at SPEECH_THRESHOLD."""
    cmd = [_require_tool("espeak-ng"), "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "--stdout", "--", word]
    wav_bytes = procs.run(cmd, capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        if wav.getframerate() != SAMPLE_RATE or wav.getnchannels() != 1:
            got = f"{wav.getframerate()} Hz x {wav.getnchannels()} channels"
            raise RuntimeError(f"espeak-ng gave {got}, expected {SAMPLE_RATE} Hz mono: unsupported espeak-ng build?")
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SPEECH_THRESHOLD)
    if loud.size == 0:
        raise RuntimeError(f"espeak-ng produced no audible speech for {word!r}")
    return samples[loud[0] : loud[-1] + 1]


def _spoken_words(sentence: str) -> list[tuple[str, str]]:
    """(text as captioned, text given to the synthesiser) per word."""
    return [(token, token.strip(".,!?")) for token in sentence.split()]


# ---------------------------------------------------------------- pictures


def _shape_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        angles, radii = [90, 210, 330], [r] * 3
    elif shape == "diamond":
        angles, radii = [90, 180, 270, 0], [r, r * 0.7, r, r * 0.7]
    elif shape == "hexagon":
        angles, radii = list(range(0, 360, 60)), [r] * 6
    elif shape == "star":
        angles, radii = list(range(90, 450, 36)), [r if i % 2 == 0 else r * 0.42 for i in range(10)]
    else:
        raise ValueError(f"not a polygon shape: {shape}")
    rad = np.deg2rad(angles)
    return [(cx + rr * np.cos(a), cy - rr * np.sin(a)) for a, rr in zip(rad, radii)]


def render_scene(shape: str, color: str, topic: str, background: tuple[int, int, int]):
    """A WIDTHxHEIGHT picture: the shape large on the left, colour name and topic word as text."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (WIDTH, HEIGHT), background)
    draw = ImageDraw.Draw(image)
    fill = COLORS[color]
    cx, cy, r = 100, 130, 72
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    else:
        draw.polygon(_shape_points(shape, cx, cy, r), fill=fill)
    # Pillow's bundled font: the same pixels on every machine.
    big, small = ImageFont.load_default(size=30), ImageFont.load_default(size=22)
    draw.text((10, 8), f"{color} {shape}", font=small, fill=(235, 235, 235))
    draw.text((250, 130), topic.upper(), font=big, fill=fill, anchor="mm")
    return image


# ---------------------------------------------------------------- video


def _run_ffmpeg(args: list[str]) -> None:
    cmd = [_require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y", *args]
    done = procs.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


# Bit-exact, single-threaded encoding so the same inputs give the same bytes.
_H264 = ["-c:v", "libx264", "-preset", "medium", "-tune", "stillimage", "-crf", "30", "-pix_fmt", "yuv420p",
         "-threads", "1", "-flags:v", "+bitexact"]
_AAC = ["-c:a", "aac", "-b:a", "32k", "-ac", "1", "-flags:a", "+bitexact"]
_MP4 = ["-map_metadata", "-1", "-fflags", "+bitexact", "-movflags", "+faststart"]


def _write_video(path: Path, scene_images: list[Path], scene_frames: list[int], audio_wav: Path) -> None:
    args: list[str] = []
    for image, frames in zip(scene_images, scene_frames):
        args += ["-loop", "1", "-framerate", str(FPS), "-t", f"{frames / FPS:.3f}", "-i", str(image)]
    args += ["-i", str(audio_wav)]
    n = len(scene_images)
    concat = "".join(f"[{i}:v]" for i in range(n)) + f"concat=n={n}:v=1:a=0,format=yuv420p[v]"
    args += ["-filter_complex", concat, "-map", "[v]", "-map", f"{n}:a", *_H264, *_AAC, *_MP4, "-shortest", str(path)]
    _run_ffmpeg(args)


def _write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(samples.astype(np.int16).tobytes())


def _vtt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def _write_vtt(path: Path, cues: list[tuple[float, float, str]]) -> None:
    from webvtt import Caption, WebVTT

    vtt = WebVTT()
    for start, end, text in cues:
        vtt.captions.append(Caption(start=_vtt_time(start), end=_vtt_time(end), text=text))
    vtt.save(str(path))


def _layout_scene(sentences: list[str], t0: float, word_audio: dict[str, np.ndarray]):
    """Place one scene's words from time t0; returns (words, caption cues)."""
    words: list[Word] = []
    cues: list[tuple[float, float, str]] = []
    t = t0
    for s_idx, sentence in enumerate(sentences):
        if s_idx:
            t += SENTENCE_GAP_S - WORD_GAP_S
        sentence_start = t
        for caption_text, spoken in _spoken_words(sentence):
            length = len(word_audio[spoken]) / SAMPLE_RATE
            words.append(Word(start=t, end=t + length, text=caption_text))
            t += length + WORD_GAP_S
        cues.append((sentence_start, words[-1].end, sentence))
    return words, cues


def _timeline(plan: list[tuple[str, str, str]], word_audio: dict[str, np.ndarray]):
    """Scenes back to back, each long enough for its narration; returns (scenes, words, cues)."""
    scenes: list[Scene] = []
    words: list[Word] = []
    cues: list[tuple[float, float, str]] = []
    t = 0.0
    for shape, color, topic in plan:
        sentences = scene_sentences(shape, color, topic)
        scene_words, scene_cues = _layout_scene(sentences, t + SCENE_LEAD_S, word_audio)
        length = max(MIN_SCENE_S, scene_words[-1].end + SCENE_TAIL_S - t)
        # Whole frames, so "cut at t" means "the first frame of the new scene is shown at t".
        end = t + math.ceil(length * FPS - 1e-6) / FPS
        if end - t > MAX_SCENE_S:
            raise RuntimeError(f"scene narration too long for {MAX_SCENE_S}s: {' '.join(sentences)}")
        scenes.append(Scene(start=t, end=end, shape=shape, color=color, topic=topic, narration=" ".join(sentences)))
        words += scene_words
        cues += scene_cues
        t = end
    return scenes, words, cues


def _mix_speech(words: list[Word], word_audio: dict[str, np.ndarray], duration: float) -> np.ndarray:
    audio = np.zeros(int(round(duration * SAMPLE_RATE)), dtype=np.int16)
    for word in words:
        clip = word_audio[word.text.strip(".,!?")]
        at = int(round(word.start * SAMPLE_RATE))
        audio[at : at + len(clip)] = clip
    return audio


def build_video(out_dir: Path, name: str, seed: int, n_scenes: int = 4) -> Path:
    """Write <name>.mp4, <name>.en.vtt and <name>.truth.json into out_dir; returns the truth path."""
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"video name {name!r} must match {_SAFE_NAME.pattern} (it becomes a file name)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_scenes(seed, n_scenes)
    sentences = [s for shape, color, topic in plan for s in scene_sentences(shape, color, topic)]
    word_audio = {word: synthesize_word(word) for word in sorted({w for s in sentences for _, w in _spoken_words(s)})}

    scenes, words, cues = _timeline(plan, word_audio)
    duration = scenes[-1].end
    if not MIN_VIDEO_S <= duration <= MAX_VIDEO_S:
        raise RuntimeError(f"{name}: {duration:.1f}s is outside {MIN_VIDEO_S}-{MAX_VIDEO_S}s; change n_scenes")

    with tempfile.TemporaryDirectory(prefix="curate-demo-") as tmp:
        tmp_dir = Path(tmp)
        images = []
        for i, (shape, color, topic) in enumerate(plan):
            images.append(tmp_dir / f"scene{i}.png")
            render_scene(shape, color, topic, BACKGROUNDS[(seed + i) % len(BACKGROUNDS)]).save(images[-1])
        wav_path = tmp_dir / "speech.wav"
        _write_wav(wav_path, _mix_speech(words, word_audio, duration))
        scene_frames = [int(round((s.end - s.start) * FPS)) for s in scenes]
        _write_video(out_dir / f"{name}.mp4", images, scene_frames, wav_path)
    _write_vtt(out_dir / f"{name}.en.vtt", cues)

    r3 = lambda x: round(x, 3)  # noqa: E731 - millisecond precision is plenty for the truth file
    truth = Truth(
        name=name,
        duration_s=r3(duration),
        fps=FPS,
        width=WIDTH,
        height=HEIGHT,
        cuts=[r3(s.start) for s in scenes[1:]],
        scenes=[Scene(r3(s.start), r3(s.end), s.shape, s.color, s.topic, s.narration) for s in scenes],
        words=[Word(r3(w.start), r3(w.end), w.text) for w in words],
        script=" ".join(s.narration for s in scenes),
    )
    truth_path = out_dir / f"{name}.truth.json"
    truth_path.write_text(json.dumps(asdict(truth), indent=1) + "\n")
    return truth_path


def generate_corpus(out_dir: Path, n_videos: int = 4, seed: int = 0) -> list[Path]:
    """The default demo set: demo_00 .. demo_{n-1}; returns the truth JSON paths."""
    return [build_video(Path(out_dir), f"demo_{i:02d}", seed=seed * 1000 + i) for i in range(n_videos)]


def load_truth(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------- fault media


def make_silent_video(path: Path, seconds: float) -> Path:
    """A plain video with an audio track that holds only silence."""
    _run_ffmpeg([
        "-f", "lavfi", "-i", f"color=c=0x203040:s={WIDTH}x{HEIGHT}:r={FPS}:d={seconds}",
        "-f", "lavfi", "-i", f"anullsrc=r={SAMPLE_RATE}:cl=mono",
        "-t", str(seconds), *_H264, *_AAC, *_MP4, str(path),
    ])  # fmt: skip
    return Path(path)


def make_video_without_audio(path: Path, seconds: float) -> Path:
    """A plain video with no audio stream at all."""
    _run_ffmpeg([
        "-f", "lavfi", "-i", f"color=c=0x402030:s={WIDTH}x{HEIGHT}:r={FPS}:d={seconds}",
        *_H264, *_MP4, str(path),
    ])  # fmt: skip
    return Path(path)


def cut_inside_index(data: bytes) -> bytes:
    """mp4 bytes cut short halfway through the index (the ``moov`` atom)."""
    offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        if data[offset + 4 : offset + 8] == b"moov":
            return data[: offset + size // 2]
        if size < 8:
            break
        offset += size
    raise ValueError("no moov atom found: not an mp4 file?")


def make_corrupt_video(src: Path, path: Path) -> Path:
    """A copy of ``src`` cut short inside its index.

    Demo videos are streaming-optimised (index first), so this is what a
    download that stopped early looks like when even the index was not
    complete: ffprobe and decoders refuse the file outright.
    """
    Path(path).write_bytes(cut_inside_index(Path(src).read_bytes()))
    return Path(path)


def make_long_video(path: Path, seconds: float, height: int = 360, scene_s: float = 10.0) -> list[float]:
    """A long moving test pattern with a hard cut every ``scene_s`` seconds, encoded fast.

    Each scene rotates the hue and flips the brightness, so every cut is a
    large change. The audio loops a shipped demo video's speech when one is
    there (so ASR has something to hear), otherwise a tone. Returns the cut times.
    """
    width = int(round(height * 16 / 9 / 2)) * 2
    scene = f"floor(t/{scene_s})"
    video = (
        f"testsrc2=s={width}x{height}:r={FPS}:d={seconds},"
        f"hue=H='{scene}*2.2':b='if(mod({scene},2),-2,0)',format=yuv420p"
    )
    speech = DEMO_DATA / "demo_00.mp4"
    audio_in = ["-stream_loop", "-1", "-i", str(speech)] if speech.exists() else ["-f", "lavfi", "-i", "sine=f=440"]
    _run_ffmpeg([
        "-f", "lavfi", "-i", video, *audio_in, "-map", "0:v", "-map", "1:a", "-t", str(seconds),
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "32", "-c:a", "aac", "-b:a", "32k", "-ac", "1",
        "-movflags", "+faststart", str(path),
    ])  # fmt: skip
    n_cuts = int(np.ceil(seconds / scene_s)) - 1
    return [round((i + 1) * scene_s, 3) for i in range(n_cuts)]


if __name__ == "__main__":
    # Regenerate the shipped demo set: python -m curate.demo.corpus
    for truth_path in generate_corpus(DEMO_DATA):
        print(truth_path)
