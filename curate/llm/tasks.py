"""Annotation tasks: a prompt template plus the JSON Schema of the reply.

Each task ``<name>`` is ``recipes/prompts/<name>.j2`` (the user message) and
``schemas/annotations/<name>.json`` (what the reply must be). The schema a
request sends is made per clip (``Task.request_schema``): spans as whole
seconds of the clip, so that a grammar-constrained model cannot write a span
outside it. A reply is parsed, checked against that schema, then against what
a schema cannot say: ``start <= end``, a multiple-choice answer among distinct
options, no blank strings.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import jinja2
import jsonschema

from .. import status
from ..status import SampleFault
from ..paths import data_dir, schema_path

TASKS = ("caption", "qa", "reasoning", "commentary", "grounding", "livecc_filter", "talking_head")

# Model replies round times; a span this far outside the clip is still accepted.
SPAN_TOLERANCE_S = 0.5
# Words are shown to the model in stretches of at most this many seconds.
LINE_SECONDS = 3.0
# Spans are asked for as an ``enum`` of the clip's whole seconds: llama.cpp's
# JSON-schema grammar honours enum but not minimum/maximum. Past this many
# seconds (whole videos) the enum would make a slow grammar: minimum/maximum
# then, which endpoints with full JSON Schema support and the validation apply.
MAX_ENUM_SECONDS = 900
# Failed rows of a reply that could not be used (after the repair retry).
REPLY_ERROR_CODES = ("llm.invalid_json", "llm.schema", "llm.truncated")
# Timed lists (commentary lines, events) get at most one item per this many seconds
# of clip: a bound that grows with the clip and keeps a short clip's reply short.
SECONDS_PER_ITEM = 2.0

# Strings the prompts use as examples of a reply's shape: a reply that echoes
# them back has said nothing, however valid its JSON.
PLACEHOLDERS = frozenset({"...", "…", "step 1", "step 2"})

# An option that is only a label ("A", "b)", "(3)") names a slot, not an answer.
OPTION_LABEL = re.compile(r"^\(?([a-d]|[1-4])[).:]?$", re.IGNORECASE)

LIVECC_CHECKS = ("comments_on_screen_in_real_time", "not_personal_feelings",
                 "not_multi_person_conversation", "text_not_garbled")


@dataclass(frozen=True)
class Clip:
    """What a prompt knows about one clip (or one whole video)."""

    clip_id: str
    video_id: str
    start: float
    end: float
    words: list[dict] = field(default_factory=list)  # {start, end, text, prob}, video time
    title: str | None = None
    previous: str | None = None
    frames: list[dict] = field(default_factory=list)  # {t, path}: the frames sent as images, in order

    @property
    def duration(self) -> float:
        return self.end - self.start

    def lines(self) -> list[dict]:
        """Words grouped into short timed stretches: [start-end] text, in clip time."""
        out: list[dict] = []
        for w in self.words:
            text = (w.get("text") or "").strip()
            if not text:
                continue
            if out and w["start_s"] - self.start - out[-1]["start"] < LINE_SECONDS:
                out[-1]["text"] += " " + text
                out[-1]["end"] = max(out[-1]["end"], w["end_s"] - self.start)
            else:
                out.append({"start": float(w["start_s"]) - self.start, "end": float(w["end_s"]) - self.start,
                            "text": text})
        return out


class ReplyError(SampleFault):
    """A reply that cannot be used; ``code`` is the row's error_code."""


def _always_ok(_output: Any) -> dict:
    return status.ok()


@dataclass(frozen=True)
class Task:
    name: str
    schema: dict
    semantic_check: Callable[[Any, Clip], list[str]]
    outcome: Callable[[dict], dict] = _always_ok
    # Top-level lists that hold exactly ``n_questions`` items: the schema sent says so,
    # which also keeps a grammar-constrained small model from writing lists until cut off.
    sized: tuple[str, ...] = ()
    # Top-level lists of timed items: at most one per SECONDS_PER_ITEM of the clip (and the file's maxItems).
    paced: tuple[str, ...] = ()
    # Frames a task needs to see by default (None: the stage's frames_per_clip); a task with its
    # own count cannot answer without frames.
    frames: int | None = None

    @property
    def can_filter(self) -> bool:
        """Its verdict may filter the clip; the annotate stage then skips the tasks after it."""
        return self.outcome is not _always_ok

    def request_schema(self, n_questions: int, clip: Clip | None = None) -> dict:
        """The schema a reply is asked for and checked against: the task's file, sized,
        with every {start, end} span as whole seconds of ``clip`` (clip time)."""
        schema = copy.deepcopy(self.schema)
        for key in self.sized:
            schema["properties"][key]["minItems"] = schema["properties"][key]["maxItems"] = n_questions
        if clip is not None:
            _whole_seconds(schema, clip_seconds(clip))
            for key in self.paced:
                items = schema["properties"][key]
                per_clip = max(items.get("minItems", 1), math.ceil(clip.duration / SECONDS_PER_ITEM))
                items["maxItems"] = min(items.get("maxItems", per_clip), per_clip)
        return schema

    def validate(self, content: str | None, finish_reason: str | None, clip: Clip,
                 schema: dict | None = None) -> dict:
        """Parse and check one reply; raise ReplyError naming what is wrong.

        Models see and answer in clip time (0 = the clip's start: short
        numbers, which small models get right far more often); the output
        returned is in video time, like the words of every table."""
        if finish_reason == "length":
            raise ReplyError("llm.truncated", "the reply was cut off at max_tokens before it ended")
        try:
            output = json.loads(content or "")
        except json.JSONDecodeError as exc:
            raise ReplyError("llm.invalid_json", f"the reply is not valid JSON ({exc})") from None
        validator = _validator(json.dumps(schema or self.schema, sort_keys=True))
        errors = sorted(validator.iter_errors(output), key=lambda e: list(e.absolute_path))
        if errors:
            raise ReplyError("llm.schema", "; ".join(_describe(e) for e in errors[:5]))
        problems = _blank_strings(output) + self.semantic_check(output, clip)
        if problems:
            raise ReplyError("llm.schema", "; ".join(problems[:5]))
        return _to_video_time(output, clip.start)


def clip_seconds(clip: Clip) -> int:
    """The last whole second a span may name: the clip's end, within the tolerance."""
    return max(0, math.floor(clip.duration + SPAN_TOLERANCE_S))


def _whole_seconds(schema: Any, last: int) -> None:
    """Make every number pair {start, end} of an object schema an integer second in [0, last], in place."""
    if isinstance(schema, list):
        for item in schema:
            _whole_seconds(item, last)
        return
    if not isinstance(schema, dict):
        return
    props = schema.get("properties") or {}
    if isinstance(props.get("start"), dict) and isinstance(props.get("end"), dict):
        second = ({"type": "integer", "enum": list(range(last + 1))} if last <= MAX_ENUM_SECONDS
                  else {"type": "integer", "minimum": 0, "maximum": last})
        props["start"], props["end"] = dict(second), copy.deepcopy(second)
    for value in schema.values():
        _whole_seconds(value, last)


def max_reply_chars(schema: dict) -> int | None:
    """The longest JSON a grammar following ``schema`` can write, in characters, or None if
    unbounded. llama.cpp's grammar allows one space after each token of JSON; a string's
    characters are counted once each (ASCII; an escape like \\u00e9 is longer). A token is at
    least one character, so this also bounds the reply in tokens."""
    return _max_chars(schema)


def _max_chars(s: dict) -> int | None:
    if "enum" in s:
        return max(len(json.dumps(v)) for v in s["enum"]) + 1
    kind = s.get("type")
    if kind == "object":
        total = 2 + 2  # "{" "}" with their spaces
        for name, sub in (s.get("properties") or {}).items():
            inner = _max_chars(sub)
            if inner is None:
                return None
            total += len(json.dumps(name)) + 1 + 2 + inner + 2  # "name" : value ,
        return total
    if kind == "array":
        if s.get("maxItems") is None:
            return None
        inner = _max_chars(s.get("items") or {})
        return None if inner is None else 4 + s["maxItems"] * (inner + 2)
    if kind == "string":
        return None if s.get("maxLength") is None else s["maxLength"] + 3
    if kind == "boolean":
        return 6
    if kind == "integer":
        return 18  # the grammar's longest: sign and 16 digits (it ignores minimum/maximum)
    if kind == "number":
        return 54  # sign, 16 digits, a 16-digit fraction, a 16-digit exponent
    return None


def get_task(name: str) -> Task:
    if name not in _REGISTRY:
        raise KeyError(f"unknown annotation task {name!r}; known: {', '.join(TASKS)}")
    return _REGISTRY[name]


def load_schema(name: str) -> dict:
    return json.loads(schema_path("annotations", f"{name}.json").read_text())


class Prompts:
    """Renders the messages of a task for a clip from the Jinja templates."""

    def __init__(self, prompts_dir: Path | None = None):
        folder = self.folder = prompts_dir or data_dir("recipes") / "prompts"
        if not (folder / "_system.j2").is_file():
            raise FileNotFoundError(f"prompt folder {folder} has no _system.j2 (copy recipes/prompts/ and edit it)")
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined,
                                      autoescape=False, keep_trailing_newline=False)

    def check(self, tasks: list[str]) -> None:
        """Fail before any request when a task's template is missing or does not parse."""
        for task in tasks:
            try:
                self.env.get_template(f"{task}.j2")
            except jinja2.TemplateNotFound:
                raise FileNotFoundError(f"no prompt template {task}.j2 in {self.folder}") from None
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(f"prompt template {task}.j2 line {exc.lineno}: {exc.message}") from None

    def messages(self, task: str, clip: Clip, *, n_questions: int = 2, frames: list[str] = ()) -> list[dict]:
        # Times in clip time: the clip runs from 0 to its duration (see Task.validate).
        context = {"title": clip.title, "start": 0.0, "end": clip.duration, "offset": clip.start,
                   "last_second": clip_seconds(clip),
                   "previous": clip.previous, "lines": clip.lines(), "n_questions": n_questions,
                   "n_frames": len(frames), "frame_times": [f["t"] - clip.start for f in clip.frames][: len(frames)]}
        system = self.env.get_template("_system.j2").render(context).strip()
        user_text = self.env.get_template(f"{task}.j2").render(context).strip()
        user: str | list[dict] = user_text
        if frames:  # OpenAI vision format: text part, then one image part per frame
            user = [{"type": "text", "text": user_text}] + [
                {"type": "image_url", "image_url": {"url": url}} for url in frames]
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def repair_messages(messages: list[dict], bad_reply: str | None, error: ReplyError) -> list[dict]:
    """The one repair retry: the conversation so far, the bad reply, and what was wrong with it."""
    ask = (f"Your reply could not be used: {error}. "
           "Reply again with only one JSON object that matches the schema"
           + (", and keep it shorter." if error.code == "llm.truncated" else "."))
    return messages + [{"role": "assistant", "content": bad_reply or ""}, {"role": "user", "content": ask}]


# --- checks a JSON Schema cannot express -------------------------------------------------


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _describe(err: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "enum" and len(err.validator_value) > 8:  # a clip's seconds: name the range
        values = err.validator_value
        return f"{where}: {err.instance!r} is not one of {values[0]!r} ... {values[-1]!r}"
    return f"{where}: {err.message}"


def _blank_strings(value: Any, where: str = "") -> list[str]:
    if isinstance(value, str):
        if not value.strip():
            return [f"{where or '(top level)'}: empty string"]
        if value.strip().lower() in PLACEHOLDERS:
            return [f"{where or '(top level)'}: {value.strip()!r} is the prompt's placeholder, not an answer"]
        return []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _blank_strings(v, f"{where}/{k}" if where else k)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _blank_strings(v, f"{where}/{i}")]
    return []


def _spans_inside(items: list[dict], clip: Clip, where: str) -> list[str]:
    """Spans (clip time) must lie inside [0, clip duration], give or take the tolerance."""
    problems = []
    lo, hi = -SPAN_TOLERANCE_S, clip.duration + SPAN_TOLERANCE_S
    for i, item in enumerate(items):
        start, end = item["start"], item["end"]
        if start > end:
            problems.append(f"{where}/{i}: start {start} is after end {end}")
        elif start < lo or end > hi:
            problems.append(f"{where}/{i}: span [{start}, {end}] is outside the clip [0, {clip.duration:.1f}]")
    return problems


def _to_video_time(value: Any, offset: float) -> Any:
    """Shift every {start, end} span of a reply from clip time to video time."""
    if isinstance(value, list):
        return [_to_video_time(v, offset) for v in value]
    if isinstance(value, dict):
        out = {k: _to_video_time(v, offset) for k, v in value.items()}
        if isinstance(out.get("start"), (int, float)) and isinstance(out.get("end"), (int, float)):
            out["start"] = round(out["start"] + offset, 3)
            out["end"] = round(out["end"] + offset, 3)
        return out
    return value


def _check_qa(output: dict, clip: Clip) -> list[str]:
    problems = _spans_inside(output["open_ended"], clip, "open_ended")
    problems += _spans_inside(output["multiple_choice"], clip, "multiple_choice")
    for i, q in enumerate(output["multiple_choice"]):
        options = [o.strip().lower() for o in q["options"]]
        if len(set(options)) != len(options):
            problems.append(f"multiple_choice/{i}: options repeat, so the answer is ambiguous")
        elif any(OPTION_LABEL.match(o) for o in options):
            problems.append(f"multiple_choice/{i}: options must be answers, not labels like 'A' or '1'")
        if not 0 <= q["answer_index"] < len(options):
            problems.append(f"multiple_choice/{i}: answer_index {q['answer_index']} is not one of the options")
    return problems


def _livecc_outcome(output: dict) -> dict:
    failed = [c for c in LIVECC_CHECKS if not output[c]]
    if not failed:
        return status.ok()
    return status.filtered(f"livecc.{failed[0]}", f"LiveCC check failed: {', '.join(failed)}")


def _talking_head_outcome(output: dict) -> dict:
    if output["talking_head"] == "yes":
        return status.filtered("vlm.talking_head", "the frames show only a talking head")
    return status.ok()


def _no_check(_output: Any, _clip: Clip) -> list[str]:
    return []


_REGISTRY: dict[str, Task] = {
    "caption": Task("caption", load_schema("caption"), _no_check),
    "qa": Task("qa", load_schema("qa"), _check_qa, sized=("open_ended", "multiple_choice")),
    "reasoning": Task("reasoning", load_schema("reasoning"), _no_check),
    "commentary": Task("commentary", load_schema("commentary"),
                       lambda out, clip: _spans_inside(out["lines"], clip, "lines"), paced=("lines",)),
    "grounding": Task("grounding", load_schema("grounding"),
                      lambda out, clip: _spans_inside(out["events"], clip, "events"), paced=("events",)),
    "livecc_filter": Task("livecc_filter", load_schema("livecc_filter"), _no_check, _livecc_outcome),
    "talking_head": Task("talking_head", load_schema("talking_head"), _no_check, _talking_head_outcome, frames=8),
}
