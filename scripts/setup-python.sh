#!/usr/bin/env bash
# Creates .venv under the repo with the Python peers' packages (msgspec, pyzmq, cbor2).
# Never fails the build: without the venv the interop tests skip with a loud message.
set -u
cd "$(dirname "$0")/.."
warn() {
  echo "" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "!!! WARNING: $*" >&2
  echo "!!! The Python interop tests (test/interop/) will be SKIPPED." >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "" >&2
  exit 0
}
command -v python3 >/dev/null 2>&1 || warn "python3 not found"
if [ -x .venv/bin/python ] && .venv/bin/python -c 'import msgspec, zmq, cbor2' 2>/dev/null; then
  echo "setup-python: .venv already has msgspec, pyzmq, cbor2"
  exit 0
fi
[ -x .venv/bin/python ] || python3 -m venv .venv || warn "python3 -m venv .venv failed"
.venv/bin/pip install --retries 0 --disable-pip-version-check -q msgspec pyzmq cbor2 \
  || warn "pip install msgspec pyzmq cbor2 failed"
.venv/bin/python -c 'import msgspec, zmq, cbor2' || warn "msgspec/pyzmq/cbor2 not importable from .venv"
echo "setup-python: .venv ready ($(.venv/bin/python -c 'import msgspec, zmq; print("msgspec", msgspec.__version__, "pyzmq", zmq.__version__)'))"
