"""`device: auto|cpu|cuda` on the model stages, exercised on whatever this
machine has: auto picks what torch sees, cuda without a GPU is refused by
`curate check` naming the key, the filter's GPU path (batches prepared in a
background thread, fp16) runs on the CPU with fp16 switched off."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest

from curate import devices
from curate.recipe import load_recipe
from curate.stages.base import StageContext, run_stage_on_table
from curate.stages.filter import FilterStage
from curate.vision import clip_encoder

torch = pytest.importorskip("torch")
HAS_GPU = torch.cuda.is_available()


def test_auto_takes_what_the_machine_has_and_cpu_is_always_cpu():
    assert devices.resolve("auto", "k") == ("cuda" if HAS_GPU else "cpu")
    assert devices.resolve("cpu", "k") == "cpu"


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_by_check_naming_the_key(tmp_path, helpers):
    with pytest.raises(devices.DeviceUnavailable, match="stages.filter.device: cuda asked for, but no CUDA GPU"):
        devices.resolve("cuda", "stages.filter.device")
    recipe = helpers.write_recipe(tmp_path, {
        "crawl": {"sources": ["http://127.0.0.1:9/x"]}, "transcribe": {}, "segment": {},
        "filter": {"clip_model": "curate-demo-clip", "device": "cuda"}})
    result = helpers.run_cli("check", str(recipe))
    assert result.returncode == 2
    assert "stages.filter.device: cuda asked for, but no CUDA GPU is visible" in result.stdout + result.stderr


def test_cuda_reserves_a_gpu_and_the_device_does_not_change_the_fingerprint(tmp_path, helpers):
    base = {"clip_model": "curate-demo-clip"}
    assert FilterStage.resources_for(FilterStage.Params(**base, device="cuda")).gpus == 1
    assert FilterStage.resources_for(FilterStage.Params(**base)).gpus == 0
    fp = [FilterStage.fingerprint_params(FilterStage.Params(**base, device=d), tmp_path) for d in ("auto", "cpu", "cuda")]
    assert fp[0] == fp[1] == fp[2]
    assert FilterStage.fingerprint_params(FilterStage.Params(**base, precision="fp16"), tmp_path) != fp[0]
    # A recipe's resources override still wins over what the device implies.
    recipe = helpers.write_recipe(tmp_path, {
        "crawl": {"sources": ["http://127.0.0.1:9/x"]}, "transcribe": {}, "segment": {},
        "filter": {**base, "device": "auto", "resources": {"gpus": 0.5}}})
    assert load_recipe(recipe).stage_resources("filter").gpus == 0.5


def test_validate_use_gpu_is_auto_by_default_and_asks_the_ray_cluster(ray_local):
    from pydantic import ValidationError

    from curate.recipe import ValidateConfig

    assert ValidateConfig().use_gpu == "auto"
    assert ValidateConfig(use_gpu=True).use_gpu is True and ValidateConfig(use_gpu=False).use_gpu is False
    with pytest.raises(ValidationError):
        ValidateConfig(use_gpu="gpu")
    gpus = ray_local.cluster_resources().get("GPU", 0)
    assert devices.ray_use_gpu("auto", "validate.use_gpu") is (gpus >= 1)
    assert devices.ray_use_gpu("auto", "validate.use_gpu", workers=int(gpus) + 1) is False  # one GPU per worker
    assert devices.ray_use_gpu(False, "validate.use_gpu") is False
    if gpus:
        assert devices.ray_use_gpu(True, "validate.use_gpu") is True
    else:
        with pytest.raises(devices.DeviceUnavailable, match="validate.use_gpu: true asks every worker for a GPU"):
            devices.ray_use_gpu(True, "validate.use_gpu")


def test_every_model_takes_its_device_from_the_one_helper():
    """No module but curate/devices.py asks torch or CTranslate2 how many GPUs there are."""
    import re
    from pathlib import Path

    import curate

    root = Path(curate.__file__).parent
    asks = re.compile(r"cuda\.is_available\(\)|get_cuda_device_count\(\)|cuda\.device_count\(\)")
    found = [p.relative_to(root).as_posix() for p in root.rglob("*.py") if asks.search(p.read_text())]
    # protocol.py names the GPU it ran on in validation.json's hardware; it chooses nothing
    assert sorted(found) == ["devices.py", "refmodel/protocol.py"]


def test_fp16_is_switched_off_on_the_cpu():
    for precision in ("auto", "fp16", "fp32"):
        enc = clip_encoder.ClipEncoder("curate-demo-clip", None, threads=1, device="cpu", precision=precision)
        assert enc.dtype == torch.float32
        assert next(enc.model.parameters()).dtype == torch.float32


@pytest.mark.skipif(not HAS_GPU, reason="no GPU on this machine")
def test_on_a_gpu_clip_runs_in_fp16_and_agrees_with_the_cpu():
    gpu = clip_encoder.ClipEncoder("curate-demo-clip", None, device="cuda")
    cpu = clip_encoder.ClipEncoder("curate-demo-clip", None, device="cpu")
    assert gpu.dtype == torch.float16
    frames = [np.full((48, 64, 3), c, np.uint8) for c in (0, 90, 200)]
    assert np.allclose(gpu.encode_frames(frames), cpu.encode_frames(frames), atol=2e-2)


def test_filter_prepares_batches_in_a_background_thread_and_embeds_them_whole(tmp_path, monkeypatch):
    import cv2

    frames = []
    for i in range(7):
        rel = f"media/v/{i}.jpg"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), np.full((60, 80, 3), 30 * i, np.uint8))
        frames.append({"t": float(i), "path": rel})
    frames.insert(3, {"t": 99.0, "path": "media/v/missing.jpg"})
    clips = [{"clip_id": "v:0", "video_id": "v", "start_s": 0.0, "end_s": 4.0, "frames": frames[:4], "text": "a red circle"},
             {"clip_id": "v:1", "video_id": "v", "start_s": 4.0, "end_s": 8.0, "frames": frames[4:], "text": "a blue square"}]

    prepared_in, batch_sizes = [], []
    real_preprocess = clip_encoder.ClipEncoder.preprocess
    real_embed = clip_encoder.ClipEncoder.embed_images

    def preprocess(self, images):
        prepared_in.append(threading.current_thread().name)
        return real_preprocess(self, images)

    def embed(self, batch):
        batch_sizes.append(len(batch))
        return real_embed(self, batch)

    monkeypatch.setattr(clip_encoder.ClipEncoder, "preprocess", preprocess)
    monkeypatch.setattr(clip_encoder.ClipEncoder, "embed_images", embed)
    ctx = StageContext(tmp_path, tmp_path, stage_dir=tmp_path / "filter")
    stage = FilterStage(FilterStage.Params(clip_model="curate-demo-clip", min_similarity=None, batch_size=3), ctx)
    stage.setup()
    assert stage.encoder.device == ("cuda" if HAS_GPU else "cpu")
    out = {r["clip_id"]: r for r in run_stage_on_table(stage, pa.Table.from_pylist(clips)).to_pylist()}

    assert prepared_in and all(name.startswith("filter-read") for name in prepared_in)
    assert batch_sizes == [3, 2, 2]  # 8 paths in batches of 3; the unreadable 4th left out of its batch
    assert out["v:0"]["status"] == "failed" and out["v:0"]["error_code"] == "filter.frame_missing"
    assert out["v:1"]["status"] == "ok" and out["v:1"]["n_frames"] == 4
