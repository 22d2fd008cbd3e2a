#!/bin/sh
# The image's install steps, in one place: the Dockerfile runs this, and the test suite runs the very same
# script into a fresh venv (no Docker engine in CI) and starts the resulting `dagmirror run`.
# Usage: docker/install.sh VENV_DIR SOURCE_DIR [deps|app|all]
#   deps: the venv and the pinned packages of docker/requirements.lock (needs only that file and this one);
#   app: dagmirror itself from SOURCE_DIR, then pip and setuptools out; all (default): both.
# The Dockerfile runs the two steps as two layers, so a change to the code reuses the cached packages.
set -eu
venv="$1"
src="$2"
step="${3:-all}"
# The build secret "ca" (make image CA=...): the CA bundle of a TLS-intercepting proxy, for pip only.
if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi
if [ "$step" != app ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet -r "$src/docker/requirements.lock"
fi
if [ "$step" != deps ]; then
    "$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet --no-deps "$src"
    # The image runs dagmirror, not an installer: pip and setuptools leave the venv (about 25 MB), so the
    # final stage holds the pinned runtime packages and dagmirror only (tests/test_container.py checks it).
    "$venv/bin/python" -m pip uninstall --yes --quiet --disable-pip-version-check pip setuptools
    "$venv/bin/dagmirror" --version
fi
