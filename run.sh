#!/usr/bin/env bash
# mmstack bootstrap and entry point.
#   ./run.sh          set up .venv if needed, generate the embedded Avito data if input/avito is empty,
#                     then run the full pipeline (configs/avito.toml)
#   ./run.sh test     run the test suite
#   ./run.sh ARGS     pass ARGS to the mmstack CLI (e.g. ./run.sh runs, ./run.sh run configs/avito.toml --set ...)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.mmstack-installed
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # nothing downloads at run time

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: mmstack needs Python 3.11+ as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
    exit 2
fi
# reinstall only when the dependencies (or this script) change
want=$(cat pyproject.toml run.sh | sha256sum | cut -d' ' -f1)

setup() {
    echo "setting up $VENV (first run, or pyproject.toml changed) ..." >&2
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    # torch first, pinned: an unpinned torch would pull a multi-GB CUDA build. Where the CPU wheel is not
    # on the pip path, point TORCH_INDEX_URL at a PyTorch CPU index.
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        "$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0 --index-url "$TORCH_INDEX_URL"
    else
        "$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[dev,serve]"
    echo "$want" > "$STAMP"
}

if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    setup 2>&1 | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
    [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] || { echo "error: setup of $VENV failed (see pip's messages above)" >&2; exit 1; }
fi

case "${1:-}" in
    "")
        input=$("$VENV/bin/python" -c 'import tomllib; c = tomllib.load(open("configs/avito.toml", "rb")); print(c["task"]["input"], c["data"]["rows"])')
        dir=${input% *}; rows=${input#* }
        if [ ! -f "$dir/train.csv" ]; then  # make-data writes train.csv last, so a crash mid-way regenerates
            "$VENV/bin/mmstack" make-data avito --rows "$rows" --out "$dir"
        fi
        exec "$VENV/bin/mmstack" run configs/avito.toml
        ;;
    test)
        shift
        # the Ray cluster tests need the optional extra; ./run.sh itself never does
        if ! "$VENV/bin/python" -c 'import ray' 2>/dev/null; then
            "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[dev,serve,ray]" >&2 \
                || echo "note: could not install the ray extra; the Ray tests will be skipped" >&2
        fi
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        exec "$VENV/bin/mmstack" "$@"
        ;;
esac
