"""16 kHz mono audio, decoded once per video and kept for later stages.

The transcribe stage writes ``media/<video_id>/audio_16k_v2.wav`` (16-bit
PCM: ample for speech, half the size of float32) and every later stage that
needs sound reads it back with :func:`load_audio` instead of decoding the
video again (docs/architecture.md: decode each video once).

Sample 0 is the container's start time, the zero of frame times too: audio
that starts after it is preceded by silence, so word times and frame times
share one clock.
"""

from __future__ import annotations

import os
import tempfile
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
# v2: on the container's timeline (issue 11). A new name, so that a file an
# older version wrote (counted from the first audio frame) is never reused.
AUDIO_FILENAME = "audio_16k_v2.wav"


class NoAudioTrack(Exception):
    """The file has no audio stream."""


class AudioDecodeError(Exception):
    """The file (or its audio stream) cannot be decoded."""


def decode_audio(video_path: Path | str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first audio stream of ``video_path`` as mono float32 in [-1, 1] at
    ``sample_rate``, sample 0 at the container's start time."""
    import av  # PyAV: in-process ffmpeg, no shell

    try:
        container = av.open(str(video_path))
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioDecodeError(f"cannot open {Path(video_path).name}: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise NoAudioTrack(f"{Path(video_path).name} has no audio stream")
        stream = container.streams.audio[0]
        start = (container.start_time or 0) / 1_000_000
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        lead = None  # silence before the first audio sample (audio that starts late)
        try:
            for frame in container.decode(stream):
                if lead is None and frame.pts is not None and frame.time_base is not None:
                    lead = np.zeros(max(0, round((float(frame.pts * frame.time_base) - start) * sample_rate)),
                                    np.float32)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):  # flush the resampler's buffer
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.error.FFmpegError, ValueError) as exc:
            raise AudioDecodeError(f"audio of {Path(video_path).name} is corrupt: {exc}") from exc
    if not chunks:
        raise AudioDecodeError(f"audio stream of {Path(video_path).name} holds no samples")
    if lead is not None and lead.size:
        chunks.insert(0, lead)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float samples as 16-bit PCM WAV, atomically (temp file + rename)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            with wave.open(f, "wb") as out:
                out.setnchannels(1)
                out.setsampwidth(2)
                out.setframerate(sample_rate)
                out.writeframes(pcm.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_audio(path: Path | str) -> np.ndarray:
    """Read a WAV written by :func:`write_wav` back as mono float32 at its own rate."""
    with wave.open(str(path), "rb") as f:
        if f.getnchannels() != 1 or f.getsampwidth() != 2:
            raise AudioDecodeError(f"{path} is not 16-bit mono PCM")
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32767.0


def extract_audio(video_path: Path, out_path: Path) -> np.ndarray:
    """The video's 16 kHz mono samples; decoded once, then read from ``out_path``.

    A file already at ``out_path`` is reused (it was written atomically, so it
    is never half a file).
    """
    if out_path.is_file():
        return load_audio(out_path)
    samples = decode_audio(video_path)
    write_wav(out_path, samples)
    return samples


def is_silent(samples: np.ndarray, peak_dbfs: float = -50.0) -> bool:
    """True when no sample rises above ``peak_dbfs`` (digital silence or near it)."""
    if samples.size == 0:
        return True
    peak = float(np.max(np.abs(samples)))
    return peak <= 10 ** (peak_dbfs / 20)
