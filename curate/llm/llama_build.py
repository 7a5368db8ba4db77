"""Build llama-cpp-python for this machine and prove it with a real completion.

``scripts/setup.sh`` runs it from the repository's root (standard library
and ``curate.procs`` only: the first build starts before curate's
dependencies are installed)::

    python -m curate.llm.llama_build wheel portable --version V    # build (or find) the wheel, print its path
    python -m curate.llm.llama_build ensure portable --version V   # install it, prove it, fall back if it crashes

Builds, from the fastest to the most portable (CMake flags of llama.cpp's ggml):

- ``native``: ``-march=native``, every instruction set this CPU reports
  (AVX-512, AMX ...). Fastest where it runs; a CPU whose hypervisor reports
  AMX it does not grant crashed on the first completion (issue 21).
- ``portable`` (the default): ``GGML_NATIVE=OFF``, i.e. x86-64-v3 (SSE4.2,
  AVX, AVX2, BMI2, FMA, F16C; no AVX-512, no AMX); on other CPUs their
  compiler's generic target.
- ``baseline``: every optional x86 instruction set off (SSE2 only).

A wheel is cached per version and build in ``~/.cache/curate/llama-cpp-python``
(``CURATE_WHEEL_CACHE``); a native one also per CPU (its flags' digest). pip's
own wheel cache is not used for it: pip keys a built wheel by the source
archive alone, not by the CMake flags or the CPU it was built on, so it
would hand a native build made elsewhere to this machine. Whatever the cache
holds, ``ensure`` proves the installed build here, in a child process
(``python -m curate.llm.proof``), and moves on to the next build when that
child crashes, saying so. ``.venv/llama-build.json`` records what passed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .. import procs

PACKAGE = "llama-cpp-python"
BUILDS = {
    "native": "-DGGML_NATIVE=ON",
    "portable": "-DGGML_NATIVE=OFF",
    "baseline": "-DGGML_NATIVE=OFF -DGGML_SSE42=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_BMI2=OFF "
                "-DGGML_FMA=OFF -DGGML_F16C=OFF",
}
ORDER = list(BUILDS)  # a build that crashes gives way to the next one
DEFAULT = "portable"
RECORD = "llama-build.json"


def cpu_flags() -> list[str]:
    """The instruction-set flags this CPU reports (x86 ``flags``, ARM ``Features``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return [platform.machine()]
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return sorted(set(value.split()))
    return [platform.machine()]


def cpu_key() -> str:
    """A digest of this CPU's instruction sets: a native build is reused only where it is the same."""
    return hashlib.sha256((platform.machine() + " " + " ".join(cpu_flags())).encode()).hexdigest()[:12]


def cache_root() -> Path:
    base = os.environ.get("CURATE_WHEEL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "curate" / PACKAGE
    return Path(base)


def wheel_dir(version: str, build: str) -> Path:
    return cache_root() / version / (f"native-{cpu_key()}" if build == "native" else build)


def cached_wheel(version: str, build: str) -> Path | None:
    found = sorted(wheel_dir(version, build).glob(f"llama_cpp_python-{version}-*.whl"))
    return found[-1] if found else None


def build_wheel(python: str, version: str, build: str, log=sys.stdout) -> Path:
    """The cached wheel of ``build``, compiled first when there is none (minutes)."""
    found = cached_wheel(version, build)
    if found is not None:
        return found
    folder = wheel_dir(version, build)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
        env = dict(os.environ, CMAKE_ARGS=BUILDS[build], FORCE_CMAKE="1")
        # --no-cache-dir: never a wheel from pip's cache, which ignores CMAKE_ARGS (see above).
        procs.run([python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", tmp, f"{PACKAGE}=={version}"],
                  env=env, check=True, stdout=log, stderr=procs.STDOUT)
        made = sorted(Path(tmp).glob("llama_cpp_python-*.whl"))
        if not made:
            raise RuntimeError(f"pip wheel made no {PACKAGE} wheel in {tmp}")
        target = folder / made[-1].name
        os.replace(made[-1], target)  # whole or not at all: a killed build leaves only its temp folder
    return target


def _build_logged(python: str, version: str, build: str, log_path: Path) -> Path:
    if cached_wheel(version, build) is None:
        print(f"    (log: {log_path})", flush=True)
    with open(log_path, "a") as log:
        return build_wheel(python, version, build, log=log)


def install_wheel(python: str, wheel: Path) -> None:
    procs.run([python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], check=True)


@dataclass
class Proof:
    ok: bool
    how: str  # "answered", "SIGSEGV", "exit code 1", "hung"
    seconds: float
    info: dict = field(default_factory=dict)
    tail: str = ""


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def prove(python: str, env: dict | None = None, timeout_s: float = 300.0) -> Proof:
    """A real completion by the installed build, in a child process that may crash."""
    t0 = time.perf_counter()
    try:
        done = procs.run([python, "-m", "curate.llm.proof"], env=env, capture_output=True, text=True,
                         timeout=timeout_s)
    except procs.TimeoutExpired:
        return Proof(False, "hung", time.perf_counter() - t0, tail=f"no answer within {timeout_s:.0f} s")
    seconds = time.perf_counter() - t0
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
    if done.returncode != 0:
        return Proof(False, describe_exit(done.returncode), seconds, tail=tail)
    try:
        info = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Proof(False, "no answer printed", seconds, tail=tail)
    return Proof(True, "answered", seconds, info=info)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure(python: str, version: str, first: str = DEFAULT, *, venv: Path | None = None,
           build: Callable[[str, str, str], Path] | None = None, install: Callable[[str, Path], None] = install_wheel,
           prove_build: Callable[[str], Proof] | None = None, say: Callable[[str], None] = print) -> dict:
    """Install ``first``'s wheel, prove it; while the proof crashes, build, install and prove
    the next, more portable build. Returns the record of the build that answered (also
    written to ``venv/llama-build.json``); raises RuntimeError when none did."""
    venv = venv or Path(python).absolute().parent.parent
    build = build or (lambda py, ver, b: _build_logged(py, ver, b, venv / f"llama-build-{b}.log"))
    prove_build = prove_build or (lambda b: prove(python))
    record_path = venv / RECORD
    try:
        before = json.loads(record_path.read_text())
    except (OSError, ValueError):
        before = {}
    tried = []
    for name in ORDER[ORDER.index(first):]:
        if tried:
            say(f"==> building the {name} llama.cpp ({BUILDS[name]}; about 10 min on 2 cores the first time)")
        wheel = build(python, version, name)
        digest = _sha256(wheel)
        if before.get("wheel_sha256") != digest or before.get("cpu") != cpu_key():
            install(python, wheel)
        proof = prove_build(name)
        if proof.ok:
            record = {"build": name, "cmake_args": BUILDS[name], "version": version, "wheel": wheel.name,
                      "wheel_sha256": digest, "cpu": cpu_key(), "proof_seconds": round(proof.seconds, 2),
                      "system_info": proof.info.get("system_info", ""), "crashed": tried}
            record_path.write_text(json.dumps(record, indent=1) + "\n")
            features = _features(record["system_info"])
            say(f"==> llama.cpp ({name} build) answered a real completion on this CPU in {proof.seconds:.1f} s"
                + (f" [{features}]" if features else ""))
            return record
        tried.append({"build": name, "how": proof.how})
        record_path.unlink(missing_ok=True)  # nothing proven is installed
        nxt = ORDER[ORDER.index(name) + 1] if name != ORDER[-1] else None
        say(f"!! the {name} llama.cpp build failed its proof on this CPU: {proof.how} on its first completion"
            + (f" ({proof.tail.splitlines()[-1][:200]})" if proof.tail else "")
            + (f"; trying the {nxt} build" if nxt else ""))
    raise RuntimeError("no llama.cpp build answered a completion on this CPU ("
                       + ", ".join(f"{t['build']}: {t['how']}" for t in tried) + "); the local LLM cannot run here: "
                       "set CURATE_LLM_URL to an OpenAI-compatible endpoint instead")


def _features(system_info: str) -> str:
    """The instruction sets llama.cpp uses, from its system line (``AVX2 = 1 | ...``)."""
    on = [part.split("=")[0].strip() for part in system_info.replace("CPU :", "|").split("|")
          if part.strip().endswith("= 1")]
    return ", ".join(on)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["wheel", "cached", "ensure", "cpu-key"])
    ap.add_argument("build", nargs="?", default=os.environ.get("CURATE_LLAMA_BUILD") or DEFAULT, choices=ORDER)
    ap.add_argument("--version", help=f"{PACKAGE} version (constraints.txt)")
    args = ap.parse_args(argv)
    if args.command == "cpu-key":
        print(cpu_key())
        return 0
    if not args.version:
        ap.error("--version is needed")
    if args.command == "cached":
        found = cached_wheel(args.version, args.build)
        print(found or "")
        return 0 if found else 1
    if args.command == "wheel":
        print(build_wheel(sys.executable, args.version, args.build, log=sys.stderr))
        return 0
    try:
        ensure(sys.executable, args.version, args.build)
    except (RuntimeError, procs.CalledProcessError) as exc:
        print(f"!! {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
