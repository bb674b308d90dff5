#!/usr/bin/env bash
# One-command set-up: system library for open3d, a virtual environment in .venv, torch, and this project.
#
#   bash install.sh                 # CPU machine: torch==2.13.0 (CPU build), project + dev tools in .venv
#   TORCH_SPEC=skip bash install.sh # keep a torch you already have (GPU servers: see README "Install on a GPU server")
#   VENV=/path/to/env bash install.sh
#
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${EXTRAS:-dev}"

step() { printf '\n==> %s\n' "$*"; }

# open3d's binary needs libusb at import time; Debian/Ubuntu package name below.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  step "installing libusb-1.0-0 (needed by open3d)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  if command -v apt-get >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    echo "warning: libusb-1.0 is missing and apt-get is not available; install libusb with your package manager" >&2
  fi
fi

# pycocoevalcap's PTB tokenizer and METEOR (scene3d QA / captioning metrics) run Java; Debian/Ubuntu package below.
# Without Java the metrics still run: METEOR is skipped and a regex tokenizer is used, with a warning.
if ! command -v java >/dev/null; then
  step "installing default-jre-headless (Java for pycocoevalcap's tokenizer and METEOR)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  if command -v apt-get >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq default-jre-headless >/dev/null
  else
    echo "warning: java is missing and apt-get is not available; install a Java runtime for METEOR" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

# torch first, pinned, so no dependency below can pull a multi-GB CUDA build on a CPU machine.
if [ "$TORCH_SPEC" != "skip" ] && ! "$PY" -c "import torch" 2>/dev/null; then
  step "installing $TORCH_SPEC"
  "${PIP[@]}" install "$TORCH_SPEC" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
fi

step "installing the project (editable) with extras [$EXTRAS]"
"${PIP[@]}" install -e ".[$EXTRAS]" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

"$PY" - <<'PY'
import torch, monai, lightning, transformers, open3d  # noqa: F401  (fails loudly if anything is missing)
print(f"ready: torch {torch.__version__} (cuda={torch.cuda.is_available()}), monai {monai.__version__}, "
      f"lightning {lightning.__version__}")
PY
