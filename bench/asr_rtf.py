"""ASR speed on this machine: the offline model, sequential vs batched, in one run.

Usage: python bench/asr_rtf.py [--videos 2] [--repeat 1] [--model tiny.en] [--batch-size 8]

Audio: the first N demo videos (about 37 s of read English each), decoded
once to 16 kHz mono and joined. Prints seconds of audio per second of wall
time ("x realtime") for

* sequential default: ``WhisperModel.transcribe`` beam 5 (no word times),
* sequential + word timestamps,
* batched: ``BatchedInferencePipeline`` batch 8, beam 5, VAD, word
  timestamps (what the transcribe stage runs), and the same greedy,

and the batched/sequential ratios. Targets (issue 3, tiny.en int8 on 2 CPU
cores): batched >= 12x realtime and >= 1.5x the sequential default.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from curate.asr import FasterWhisperASR, audio_seconds
    from curate.audio import decode_audio
    from curate.demo.corpus import DEMO_DATA

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="best of N timings per mode (a shared box is noisy)")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="CTranslate2 threads (the stage uses its declared CPUs); more than cores slows batching")
    args = ap.parse_args()

    videos = sorted(DEMO_DATA.glob("*.mp4"))[: args.videos]
    if not videos:
        raise SystemExit(f"no demo videos in {DEMO_DATA}")
    audio = np.concatenate([decode_audio(v) for v in videos])
    seconds = audio_seconds(audio)
    asr = FasterWhisperASR(args.model, batch_size=args.batch_size, cpu_threads=args.threads)
    print(f"model {asr.model_version}; audio {seconds:.1f} s from {len(videos)} demo videos; "
          f"{args.threads} threads on {os.cpu_count()} cpus; load average {os.getloadavg()[0]:.1f}")
    asr.transcribe(audio[: 16000 * 5])  # warm-up: first-call allocations are not speed

    def seq_default():
        segments, _ = asr.whisper.transcribe(audio, beam_size=5)
        return sum(len(s.text.split()) for s in segments)

    def seq_words():
        segments, _ = asr.whisper.transcribe(audio, beam_size=5, word_timestamps=True)
        return sum(len(s.words) for s in segments)

    def batched():
        return len(asr.transcribe(audio).words)

    def batched_greedy():
        segments, _ = asr.pipeline.transcribe(audio, batch_size=args.batch_size, beam_size=1, word_timestamps=True)
        return sum(len(s.words) for s in segments)

    modes = [("sequential default (beam 5)", seq_default),
             ("sequential + word timestamps", seq_words),
             (f"batched {args.batch_size} + VAD + word timestamps", batched),
             ("  same, greedy (beam 1), for reference", batched_greedy)]
    best = {label: float("inf") for label, _ in modes}
    words = {}
    for _ in range(args.repeat):  # interleaved, so a burst of load hits every mode alike
        for label, fn in modes:
            t0 = time.perf_counter()
            words[label] = fn()
            best[label] = min(best[label], time.perf_counter() - t0)
    results = {}
    for label, _ in modes:
        results[label] = seconds / best[label]
        print(f"{label:40s} {best[label]:6.2f} s  {results[label]:6.1f}x realtime  ({words[label]} words)")

    rtf = list(results.values())
    print(f"batched / sequential default:        {rtf[2] / rtf[0]:.2f}x")
    print(f"batched / sequential + word times:   {rtf[2] / rtf[1]:.2f}x")
    print(f"targets: batched >= 12x realtime ({'met' if rtf[2] >= 12 else 'NOT met'}), "
          f">= 1.5x sequential default ({'met' if rtf[2] / rtf[0] >= 1.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
