"""Segment stage: one decode pass per video -> scene cuts, sampled frames, clips.

The pass feeds PySceneDetect every (downscaled) frame and writes the frames
sampled at ``sample_fps`` as JPEGs under ``media/<video_id>/frames_*`` for the
filter stage (and the reference model), so no later stage decodes the video
again. Clips come from LiveCC's speech rule or from the scene cuts.

``mode: speech`` reads transcribe's ok rows (videos with words); ``mode:
scene`` reads every video crawl fetched and takes words from transcribe
where the recipe runs it and it kept them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import Field, model_validator

from .. import status
from ..procs import die_with_parent
from ..media.released import released_reason
from ..speech.clips import INTERPOLATED, Clip, attach_cuts, previous_text, scene_clips, speech_clips, word_stream
from .base import Params, Resources, Stage

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
# How frames are sampled and drawn; part of the frame folder's name, so a
# change here never rewrites JPEGs that older rows point to.
# 2: container timeline, upright (display matrix), display aspect (SAR).
# 3: shrunk and converted by swscale's area filter from YUV (was BGR, then OpenCV's area filter).
SAMPLER_VERSION = 3


class SegmentParams(Params):
    mode: Literal["speech", "scene"] = "speech"
    # LiveCC defaults: 30-240 s clips, a gap over 3 s between words ends one.
    min_clip_s: float = Field(30.0, gt=0, le=3600)
    max_clip_s: float = Field(240.0, gt=0, le=7200)
    max_gap_s: float = Field(3.0, gt=0, le=600)
    sentence_start: bool = False  # a clip must start at a sentence start
    # Speech-rate window in words per second (LiveCC's check); null = keep all.
    words_per_second: tuple[float, float] | None = (1.0, 4.0)
    previous_max_words: int = Field(256, ge=0, le=100_000)  # 0 = all earlier words
    # A clip holding a word whose time nothing measured (time_source 'interpolated', e.g. whisperx
    # without alignment) is filtered (segment.interpolated_times); 'keep' releases it, flagged per word.
    interpolated_times: Literal["filter", "keep"] = "filter"
    detector: Literal["content", "adaptive"] = "content"
    threshold: float = Field(27.0, ge=0, le=255)  # ContentDetector
    adaptive_threshold: float = Field(3.0, gt=0, le=255)  # AdaptiveDetector
    min_scene_len_s: float = Field(0.6, ge=0, le=600)
    # The decoder leaves out frames no other frame refers to (about half of libx264's): a cut
    # comes at most one frame late, the decode costs ~60%. ContentDetector only (AdaptiveDetector's
    # window counts frames); false decodes every frame.
    skip_nonref: bool = True
    sample_fps: float = Field(1.0, gt=0, le=30)
    frame_short_side: int = Field(224, ge=32, le=1080)
    jpeg_quality: int = Field(90, ge=30, le=100)
    # Videos decoded at once (worker processes) by one stage worker; null = the stage's cpus.
    parallel_videos: int | None = Field(None, ge=1, le=64)

    @model_validator(mode="after")
    def _ranges(self) -> "SegmentParams":
        if self.min_clip_s > self.max_clip_s:
            raise ValueError(f"min_clip_s ({self.min_clip_s}) must not exceed max_clip_s ({self.max_clip_s})")
        if self.words_per_second is not None and not 0 <= self.words_per_second[0] <= self.words_per_second[1]:
            raise ValueError(f"words_per_second must be [low, high] with 0 <= low <= high, got {self.words_per_second}")
        return self


@dataclass
class DecodedVideo:
    cuts: list[float]
    duration_s: float
    frames: list[dict]  # {"t": seconds, "path": relative to the catalog root}
    cpu_s: float = 0.0  # CPU seconds the decoding process spent on it (all its threads)


class SegmentStage(Stage):
    name = "segment"
    # 2: time columns start_s/end_s (no SQL quoting), float64 word times
    # 3: container clock, upright display-aspect frames, final speech run kept,
    #    previous by position, no-clip rows keep cuts and frames, scene mode reads crawl
    # 4: video_duration_s is where the video stream ends (its last packet), crawl's duration_s
    # 5: words carry time_source; clips with interpolated word times filtered (interpolated_times)
    version = "5"
    Params = SegmentParams
    inputs = ("transcribe", "crawl")
    input_key = "video_id"
    row_key = "clip_id"
    resources = Resources(cpus=2, memory_gb=1.5)
    reads_media = frozenset({"video"})
    progress_unit = "videos"  # its input rows are videos; its output rows are clips

    @classmethod
    def inputs_for(cls, params: SegmentParams) -> tuple[str, ...]:
        # Scene clips need no words: every video crawl fetched is work.
        return ("crawl",) if params.mode == "scene" else cls.inputs

    @classmethod
    def optional_inputs_for(cls, params: SegmentParams) -> tuple[str, ...]:
        return ("transcribe",) if params.mode == "scene" else ()

    def process(self, table: pa.Table) -> list[dict]:
        videos = table.to_pylist()
        checked = [self._check(v) for v in videos]
        jobs = [(v["video_id"], str(self._resolve(v["video_path"])), str(self.ctx.catalog_root), self.params,
                 v.get("video_sha256")) for v, err in zip(videos, checked) if err is None]
        decoded = iter(self._decode_all(jobs))
        rows = []
        for video, err in zip(videos, checked):
            rows += [err] if err is not None else self._video_rows(video, next(decoded))
        return rows

    _pool = None  # worker processes kept from setup() to teardown(), so no shard pays their start

    def _workers(self) -> int:
        return self.params.parallel_videos or max(1, int(self.resources.cpus))

    def setup(self) -> None:
        if self._workers() > 1:
            self._pool = _start_pool(self._workers())

    def teardown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _decode_all(self, jobs: list[tuple]) -> list:
        """Decode every video once, several at a time in worker processes.

        Processes, not threads: the scene detector's per-frame Python work
        holds the GIL, so threads would still decode one video at a time.
        """
        if self._workers() <= 1 or len(jobs) <= 1 and self._pool is None:
            return [decode_job(job) for job in jobs]
        if self._pool is not None:
            from concurrent.futures.process import BrokenProcessPool

            try:
                done = list(self._pool.map(decode_job, jobs))
            except BrokenProcessPool:  # a worker died (as a per-shard pool's would fail the shard):
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = _start_pool(self._workers())  # the next shard gets live workers
                raise
            # The pool outlives this shard, so the OS has not counted its CPU yet: the workers do.
            self.helper_cpu_s += sum(d.cpu_s for d in done if isinstance(d, DecodedVideo))
            return done
        pool = _start_pool(min(self._workers(), len(jobs)))  # without setup(): a pool for this table only
        try:
            return list(pool.map(decode_job, jobs))
        finally:
            pool.shutdown()

    def _check(self, video: dict) -> dict | None:
        """An error row for an input row that cannot be decoded at all, else None."""
        video_id = video["video_id"]
        if not _SAFE_ID.fullmatch(video_id or ""):
            return _error_row(video_id or "", status.failed("segment.bad_video_id",
                                                            f"video_id {video_id!r} cannot name a media folder"))
        if not video.get("video_path"):
            return _error_row(video_id, status.failed("segment.missing", "input row has no video_path"))
        released = released_reason(self.ctx.catalog_root, video_id, "video")
        if released and not self._resolve(video["video_path"]).exists():
            return _error_row(video_id, status.failed("media.released", released))
        return None

    def _resolve(self, video_path: str) -> Path:
        path = Path(video_path)
        return path if path.is_absolute() else self.ctx.catalog_root / path

    def _video_rows(self, video: dict, decoded: "DecodedVideo | tuple[str, str]") -> list[dict]:
        video_id = video["video_id"]
        if isinstance(decoded, tuple):  # (error code, message) from the decode pass
            return [_error_row(video_id, status.failed(*decoded))]
        words = word_stream([_word(w) for w in (video.get("words") or [])])
        clips = self._clips(words, decoded)
        if not clips:
            why = (f"no clip of {self.params.min_clip_s}-{self.params.max_clip_s}s in {len(words)} words "
                   f"({decoded.duration_s:.1f}s of video, mode {self.params.mode})")
            # What the decode pass measured stays on the row (its frames are on disk).
            return [_error_row(video_id, status.filtered("segment.no_clips", why)) | {
                "mode": self.params.mode, "title": video.get("title"), "frames": decoded.frames,
                "video_cuts": decoded.cuts, "video_duration_s": decoded.duration_s}]
        return [self._clip_row(video, clip, words, decoded) for clip in clips]

    def _clips(self, words: list[dict], decoded: DecodedVideo) -> list[Clip]:
        p = self.params
        if p.mode == "speech":
            clips = speech_clips(words, p.min_clip_s, p.max_clip_s, p.max_gap_s, p.sentence_start)
        else:
            clips = scene_clips(decoded.cuts, decoded.duration_s, words, p.min_clip_s, p.max_clip_s)
        attach_cuts(clips, decoded.cuts)
        return clips

    def _clip_row(self, video: dict, clip: Clip, words: list[dict], decoded: DecodedVideo) -> dict:
        p = self.params
        rate = clip.words_per_second
        verdict = status.ok()
        guessed = sum(1 for w in clip.words if w.get("time_source") == INTERPOLATED)
        if guessed and p.interpolated_times == "filter":
            verdict = status.filtered("segment.interpolated_times",
                                      f"{guessed} of {clip.n_words} words have interpolated times (no aligner "
                                      f"measured them); stages.segment.interpolated_times: keep releases them")
        elif p.mode == "speech" and p.words_per_second is not None:
            low, high = p.words_per_second
            if rate is None or not low <= rate <= high:
                verdict = status.filtered("segment.speech_rate",
                                          f"{rate if rate is None else round(rate, 2)} words/s outside [{low}, {high}]")
        return {
            "clip_id": f"{video['video_id']}:{round(clip.start * 1000)}-{round(clip.end * 1000)}",
            "video_id": video["video_id"],
            "mode": p.mode,
            "start_s": clip.start,
            "end_s": clip.end,
            "cuts": clip.cuts,
            "words": clip.words,
            "text": clip.text,
            "n_words": clip.n_words,
            "words_per_second": rate,
            "previous": previous_text(words, clip.first, p.previous_max_words),
            "title": video.get("title"),
            "frames": [f for f in decoded.frames if clip.start <= f["t"] < clip.end],
            "video_cuts": decoded.cuts,
            "video_duration_s": decoded.duration_s,
            **verdict,
        }


def _start_pool(workers: int):
    """``workers`` processes, started and with their libraries imported before this returns."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # "spawn": a fresh interpreter, never a fork of a process running threads (Ray, PyAV).
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(os.getpid(),))
    # One task per worker, submitted at once, starts them all (each runs the initializer first).
    for future in [pool.submit(_worker_ready) for _ in range(workers)]:
        future.result()
    return pool


def _worker_init(parent: int) -> None:
    """A decode worker dies with the stage's process (it outlives shards, so a worker
    killed while busy must not leave it behind), imports what every video needs once
    (about 0.7 s of the first video's time otherwise) and keeps OpenCV to its own thread:
    the parallelism is across videos, and OpenCV's thread pool on top of it only adds
    hand-offs between busy cores."""
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
    import av  # noqa: F401
    import cv2
    import scenedetect.detectors  # noqa: F401

    cv2.setNumThreads(1)


def _worker_ready() -> bool:
    return True


def decode_job(job: tuple) -> "DecodedVideo | tuple[str, str]":
    """Picklable entry point for worker processes: a DecodedVideo or (error code, message)."""
    from ..media.decode import DecodeError

    video_id, path, catalog_root, params, video_sha256 = job
    cpu_started = time.process_time()
    try:
        decoded = decode_video(video_id, Path(path), Path(catalog_root), params, video_sha256)
    except DecodeError as exc:
        return (exc.code, str(exc))
    decoded.cpu_s = time.process_time() - cpu_started
    return decoded


def skips_nonref(p: SegmentParams) -> bool:
    return p.skip_nonref and p.detector == "content"


def frames_folder(video_id: str, p: SegmentParams, video_sha256: str | None) -> Path:
    """``media/<video_id>/frames_<fps>fps_<size>_<key>``, relative to the catalog root.

    The key hashes everything that decides the JPEGs' bytes (the sampler's
    version, fps, size, JPEG quality, the video file's sha256), so a folder,
    once written, is never rewritten: other settings get another folder.
    """
    decisive = f"{SAMPLER_VERSION}|{p.sample_fps!r}|{p.frame_short_side}|{p.jpeg_quality}|{video_sha256 or ''}"
    if skips_nonref(p):  # a sample may then be the frame after the one at its time
        decisive += "|nonref"
    key = hashlib.sha256(decisive.encode()).hexdigest()[:10]
    return Path("media") / video_id / f"frames_{p.sample_fps:g}fps_{p.frame_short_side}_{key}"


def decode_video(video_id: str, path: Path, catalog_root: Path, p: SegmentParams,
                 video_sha256: str | None = None) -> DecodedVideo:
    """The one pass: every frame to the scene detector, samples to JPEG under
    :func:`frames_folder`. Raises DecodeError."""
    import cv2

    from ..media.decode import DecodeError, iter_frames
    from ..media.scenes import SceneCutter

    # One decoding thread beside this one: the parallelism is across videos.
    info, frames = iter_frames(path, sample_fps=p.sample_fps, sample_short_side=p.frame_short_side, threads=1,
                               skip_nonref=skips_nonref(p))
    cutter = SceneCutter(p.detector, threshold=p.threshold, min_scene_len_s=p.min_scene_len_s,
                         adaptive_threshold=p.adaptive_threshold, fps_hint=info.fps)
    if video_sha256 is None:  # no digest from crawl: the file's size and time stand in for it
        st = path.stat()
        video_sha256 = f"{st.st_size}-{st.st_mtime_ns}"
    rel_dir = frames_folder(video_id, p, video_sha256)
    final_dir = catalog_root / rel_dir
    # Frames go to a private folder renamed into place at the end, so a
    # crashed run never leaves a half-written frame set behind.
    tmp_dir = final_dir.with_name(f".{final_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    sampled: list[dict] = []
    last_t, n = 0.0, 0
    try:
        for frame in frames:
            cutter.add(frame.pts, frame.time_base, frame.small)
            last_t, n = max(last_t, frame.t), n + 1
            if frame.sample is not None:
                name = f"{len(sampled):06d}.jpg"
                ok, jpg = cv2.imencode(".jpg", frame.sample, [cv2.IMWRITE_JPEG_QUALITY, p.jpeg_quality])
                if not ok:
                    raise DecodeError("segment.decode", f"JPEG encoding failed at t={frame.t:.3f}s")
                (tmp_dir / name).write_bytes(jpg.tobytes())
                sampled.append({"t": frame.t, "path": str(rel_dir / name)})
        if n == 0:
            raise DecodeError("segment.empty", f"{path.name}: the video stream holds no frames")
        if not final_dir.is_dir():
            try:
                os.replace(tmp_dir, final_dir)
            except OSError:  # another process put the same frames there first
                if not final_dir.is_dir():
                    raise
        # else: the same settings wrote these frames before; they stay as they are
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    # Where the video stream ends (its last packet's pts + duration): crawl's duration_s.
    duration = frames.end_s if frames.end_s is not None else last_t + (1.0 / info.fps if info.fps else 0.0)
    return DecodedVideo(cuts=cutter.finish(), duration_s=duration, frames=sampled)


def _word(w: dict) -> dict:
    return {"start_s": float(w["start_s"]), "end_s": float(w["end_s"]), "text": str(w.get("text") or ""),
            "prob": None if w.get("prob") is None else float(w["prob"]), "time_source": w.get("time_source")}


def _error_row(video_id: str, verdict: dict) -> dict:
    suffix = "none" if verdict["status"] == status.Status.FILTERED else "error"
    return {"clip_id": f"{video_id}:{suffix}", "video_id": video_id, **verdict}
