"""CLIP filter throughput vs the bare model forward on the same frames.

    PYTHONPATH=. python bench/clip_bench.py                         # ViT-B-32 (random weights: speed only)
    PYTHONPATH=. python bench/clip_bench.py --model curate-demo-clip
    PYTHONPATH=. python bench/clip_bench.py --device cpu,cuda             # GPU vs CPU (cuda: fp16)

Baseline: ``model.encode_image`` on already-preprocessed tensors, in batches
(nothing but the forward). Stage: FilterStage.process on clips pointing at
the same frames as JPEG files (reading, preprocessing, text encoding,
similarities and the side table included). Target: stage >= 80% of baseline
frames/s. Weights do not change the speed, so no download is needed.
``--device`` (default ``cpu,cuda``) runs both measurements per device; a device
this machine lacks is reported as such (``"cuda": "no CUDA GPU visible"``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa


def make_frames(root: Path, n: int, per_clip: int) -> list[dict]:
    """Demo-style pictures as 224-short-side JPEGs, grouped into clips like the segment stage writes."""
    import cv2

    from curate.demo.corpus import BACKGROUNDS, COLORS, SHAPE_TRAITS, TOPICS, render_scene, scene_sentences

    shapes, colors = sorted(SHAPE_TRAITS), sorted(COLORS)
    clips, frames = [], []
    for i in range(n):
        shape, color, topic = shapes[i % len(shapes)], colors[i % len(colors)], TOPICS[i % len(TOPICS)]
        img = np.asarray(render_scene(shape, color, topic, BACKGROUNDS[i % len(BACKGROUNDS)]))[:, :, ::-1]
        img = cv2.resize(img, (299, 224), interpolation=cv2.INTER_CUBIC)
        rel = Path("media") / "bench" / f"{i:06d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        frames.append({"t": float(i), "path": str(rel)})
        if len(frames) == per_clip or i == n - 1:
            clips.append({"clip_id": f"bench:{len(clips)}", "video_id": "bench", "start_s": frames[0]["t"],
                          "end_s": frames[-1]["t"] + 1, "frames": frames,
                          "text": " ".join(scene_sentences(shape, color, topic)), "title": "bench"})
            frames = []
    return clips


def measure(args, root: Path, clips: list[dict], device: str) -> dict:
    import cv2
    import torch

    from curate.stages.base import StageContext, run_stage_on_table
    from curate.stages.filter import FilterStage
    from curate.vision.clip_encoder import ClipEncoder, preprocess_bgr

    demo = args.model == "curate-demo-clip"
    paths = [f["path"] for c in clips for f in c["frames"]]
    if demo:
        encoder = ClipEncoder(args.model, None, threads=args.threads, batch_size=args.batch, device=device)
    else:  # random weights: same speed, no download
        import open_clip

        torch.set_num_threads(args.threads)
        encoder = ClipEncoder.__new__(ClipEncoder)
        encoder.model = open_clip.create_model(args.model, pretrained=None).eval()
        encoder.tokenizer = open_clip.get_tokenizer(args.model)
        encoder.preprocess_cfg = dict(encoder.model.visual.preprocess_cfg)
        encoder.batch_size = args.batch
        encoder.device = device
        encoder.dtype = torch.float16 if device == "cuda" else torch.float32
        encoder.model.to(device=device, dtype=encoder.dtype)
    tensors = [torch.from_numpy(preprocess_bgr([cv2.imread(str(root / p)) for p in paths[k:k + args.batch]],
                                               encoder.preprocess_cfg))
               for k in range(0, len(paths), args.batch)]
    encoder.embed_images(tensors[0][:2])  # warm-up
    t0 = time.perf_counter()
    for batch in tensors:
        encoder.embed_images(batch)  # returns numpy: the GPU has finished
    bare_s = time.perf_counter() - t0

    stage = FilterStage(FilterStage.Params(clip_model=args.model, clip_pretrained=None if demo else "bench",
                                           min_similarity=None, batch_size=args.batch, device=device),
                        StageContext(root, root, stage_dir=root / f"filter-{device}"))
    stage.encoder, stage.model_label = encoder, f"{args.model}/bench"  # the loaded model, as setup() would
    stage.resources = stage.resources.model_copy(update={"cpus": args.threads})
    t0 = time.perf_counter()
    out = run_stage_on_table(stage, pa.Table.from_pylist(clips))
    stage_s = time.perf_counter() - t0
    assert out.num_rows == len(clips) and set(out.column("status").to_pylist()) == {"ok"}
    n = len(paths)
    return {"precision": str(encoder.dtype).removeprefix("torch."), "bare_forward_fps": round(n / bare_s, 1),
            "stage_fps": round(n / stage_s, 1), "stage_vs_bare": round(bare_s / stage_s, 3)}


def main() -> None:
    from curate import devices

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--per-clip", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu,cuda", help="comma-separated: cpu, cuda")
    args = ap.parse_args()

    report: dict = {"model": args.model, "threads": args.threads, "batch": args.batch}
    with tempfile.TemporaryDirectory(prefix="clipbench-") as tmp:
        root = Path(tmp)
        clips = make_frames(root, args.frames, args.per_clip)
        report["frames"] = sum(len(c["frames"]) for c in clips)
        for device in [d.strip() for d in args.device.split(",") if d.strip()]:
            if device == "cuda" and devices.cuda_count() == 0:
                report[device] = "no CUDA GPU visible: not measured"
                continue
            report[device] = measure(args, root, clips, device)
    if isinstance(report.get("cpu"), dict) and isinstance(report.get("cuda"), dict):
        report["cuda_vs_cpu_stage"] = round(report["cuda"]["stage_fps"] / report["cpu"]["stage_fps"], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
