#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run them.
#   bash scripts/test.sh            all tests (CPU; the CUDA tests are in gpu_tests/, run where a GPU is)
#   bash scripts/test.sh -k browser extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
# The CPU build of torch first: it satisfies requirements.txt without pulling a multi-GB CUDA build.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0 -r requirements.txt -r requirements-dev.txt

# The browser tests drive Debian's Chromium with Playwright (Playwright's own browser download is not used).
if ! command -v chromium >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

if [ ! -f ../shared/data/tinyshakespeare.txt ]; then
  echo "scripts/test.sh: ../shared/data/tinyshakespeare.txt is missing (the training corpus the tests read)" >&2
  exit 1
fi

export GRADIO_ANALYTICS_ENABLED=False HF_HUB_DISABLE_TELEMETRY=1
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
