"""ASR speed on this machine: the offline model, sequential vs batched, in one run.

Usage: python bench/asr_rtf.py [--audio read|demo|both] [--seconds 74] [--repeat 3]
                               [--model tiny.en] [--batch-size 8] [--threads N]

Audio (16 kHz mono, decoded once):

* ``read``: ~74 s of continuous read English, sentences synthesised by
  espeak-ng from ``bench/read_speech.py`` (the issue's condition: read speech);
* ``demo``: the first demo videos joined (~37 s each), spoken one word at a
  time with pauses (~1.6 words per second: sparser than reading).

Prints seconds of audio per second of wall time ("x realtime") and the WER
against the text for

* sequential default: ``WhisperModel.transcribe`` beam 5 (no word times),
* sequential + word timestamps,
* batched: ``BatchedInferencePipeline`` batch 8, beam 5, VAD, word
  timestamps (what the transcribe stage runs), and the same greedy,

and the batched/sequential ratios. Targets (issue 3, tiny.en int8 on 2 CPU
cores, read speech): batched >= 12x realtime and >= 1.5x the sequential default.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))


def demo_speech(seconds: float) -> tuple[np.ndarray, str]:
    """Demo videos joined until at least ``seconds``; the text is their scripts' words."""
    from curate.media.audio import decode_audio
    from curate.demo.corpus import DEMO_DATA, load_truth

    audio, text = [], []
    for video in sorted(DEMO_DATA.glob("*.mp4")):
        audio.append(decode_audio(video))
        text += [w["text"] for w in load_truth(video.with_suffix(".truth.json"))["words"]]
        if sum(len(a) for a in audio) >= seconds * 16000 * 0.98:  # two videos make 74 s
            break
    return np.concatenate(audio), " ".join(text)


def bench(asr, audio: np.ndarray, text: str, label: str, args) -> float:
    from curate.speech.asr import audio_seconds, normalized_wer

    seconds = audio_seconds(audio)
    print(f"\n{label}: {seconds:.1f} s of audio, {len(text.split())} words "
          f"({len(text.split()) / seconds:.1f} words/s); load average {os.getloadavg()[0]:.1f}")

    def seq_default():
        segments, _ = asr.whisper.transcribe(audio, beam_size=5)
        return " ".join(s.text for s in segments)

    def seq_words():
        segments, _ = asr.whisper.transcribe(audio, beam_size=5, word_timestamps=True)
        return " ".join(w.word for s in segments for w in s.words)

    def batched():
        return " ".join(w["text"] for w in asr.transcribe(audio).words)

    def batched_greedy():
        segments, _ = asr.pipeline.transcribe(audio, batch_size=args.batch_size, beam_size=1, word_timestamps=True)
        return " ".join(w.word for s in segments for w in s.words)

    modes = [("sequential default (beam 5)", seq_default),
             ("sequential + word timestamps", seq_words),
             (f"batched {args.batch_size} + VAD + word timestamps", batched),
             ("  same, greedy (beam 1), for reference", batched_greedy)]
    best = {name: float("inf") for name, _ in modes}
    said = {}
    for _ in range(args.repeat):  # interleaved, so a burst of load hits every mode alike
        for name, fn in modes:
            t0 = time.perf_counter()
            said[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    rtf = {}
    for name, _ in modes:
        rtf[name] = seconds / best[name]
        print(f"  {name:40s} {best[name]:6.2f} s  {rtf[name]:6.1f}x realtime  WER {normalized_wer(text, said[name]):.1%}")
    seq, seq_w, bat = (rtf[name] for name, _ in modes[:3])
    print(f"  batched / sequential default:        {bat / seq:.2f}x")
    print(f"  batched / sequential + word times:   {bat / seq_w:.2f}x")
    print(f"  targets: batched >= 12x realtime ({'met' if bat >= 12 else 'NOT met'}), "
          f">= 1.5x sequential default ({'met' if bat / seq >= 1.5 else 'NOT met'})")
    return bat / seq


def main() -> None:
    from curate.speech.asr import FasterWhisperASR

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--audio", choices=("read", "demo", "both"), default="both")
    ap.add_argument("--seconds", type=float, default=74.0, help="audio length (at least; whole sentences/videos)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings per mode (a shared box is noisy)")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="CTranslate2 threads (the stage uses its declared CPUs); more than cores slows batching")
    args = ap.parse_args()

    asr = FasterWhisperASR(args.model, batch_size=args.batch_size, cpu_threads=args.threads)
    print(f"model {asr.model_version}; {args.threads} threads on {os.cpu_count()} cpus; best of {args.repeat}")
    if args.audio in ("read", "both"):
        from read_speech import read_speech

        audio, text = read_speech(args.seconds)
        asr.transcribe(audio[: 16000 * 5])  # warm-up: first-call allocations are not speed
        bench(asr, audio, text, "read speech (espeak-ng, bench/read_speech.py)", args)
    if args.audio in ("demo", "both"):
        audio, text = demo_speech(args.seconds)
        asr.transcribe(audio[: 16000 * 5])
        bench(asr, audio, text, "demo corpus speech", args)


if __name__ == "__main__":
    main()
