#!/bin/sh
# The image's install steps, in one place: the Dockerfile runs this, and the test suite runs the very same
# script into a fresh venv (no Docker engine in CI) and starts the resulting `dagmirror run`.
# Usage: docker/install.sh VENV_DIR SOURCE_DIR
set -eu
venv="$1"
src="$2"
python3 -m venv "$venv"
"$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet -r "$src/docker/requirements.lock"
"$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet --no-deps "$src"
"$venv/bin/dagmirror" --version
