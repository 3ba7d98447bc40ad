#!/usr/bin/env bash
# Creates .venv under the repo with the Python peers' packages: msgspec, pyzmq, cbor2 (event peers)
# and tokenizers, jinja2 (test/python/vllm_server.py, the vLLM-like server: same tokenizer, same
# chat-template rendering as transformers).
# Never fails the build: without the venv the interop tests skip with a loud message.
set -u
cd "$(dirname "$0")/.."
PKGS="msgspec pyzmq cbor2 tokenizers jinja2"
IMPORTS="import msgspec, zmq, cbor2, tokenizers, jinja2"
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
if [ -x .venv/bin/python ] && .venv/bin/python -c "$IMPORTS" 2>/dev/null; then
  echo "setup-python: .venv already has $PKGS"
  exit 0
fi
[ -x .venv/bin/python ] || python3 -m venv .venv || warn "python3 -m venv .venv failed"
# shellcheck disable=SC2086
.venv/bin/pip install --retries 0 --disable-pip-version-check -q $PKGS \
  || warn "pip install $PKGS failed"
.venv/bin/python -c "$IMPORTS" || warn "$PKGS not all importable from .venv"
echo "setup-python: .venv ready ($(.venv/bin/python -c 'import msgspec, zmq, tokenizers, jinja2; print("msgspec", msgspec.__version__, "pyzmq", zmq.__version__, "tokenizers", tokenizers.__version__, "jinja2", jinja2.__version__)'))"
