#!/bin/sh
# Confab's container entrypoint (also usable on a plain host).
#
#   confab-entrypoint [run|serve|worker|models|doctor ...]   run that `confab` command
#   confab-entrypoint healthcheck                            exit 0 when /healthz answers
#   confab-entrypoint any-other-program ...                  run it as is (a shell, say)
#
# It makes sure the data and models folders exist and are writable before Confab starts, so a
# volume mounted with the wrong owner is reported in one line instead of a traceback.
set -eu

: "${CONFAB_DATA_DIR:=${XDG_DATA_HOME:-$HOME/.local/share}/confab}"
: "${CONFAB_MODELS_DIR:=$CONFAB_DATA_DIR/models}"
: "${CONFAB_PORT:=8080}"
export CONFAB_DATA_DIR CONFAB_MODELS_DIR CONFAB_PORT
CONFAB_BIN="${CONFAB_BIN:-confab}"

healthcheck() {
    host="${CONFAB_HEALTH_HOST:-127.0.0.1}"
    python_bin="$(dirname "$(command -v "$CONFAB_BIN")")/python"
    [ -x "$python_bin" ] || python_bin=python3
    exec "$python_bin" - "$host" "$CONFAB_PORT" <<'PY'
import json, sys, urllib.request
host, port = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=4) as r:
        sys.exit(0 if r.status == 200 and json.load(r).get("status") == "ok" else 1)
except Exception as e:
    print(f"unhealthy: {e}", file=sys.stderr)
    sys.exit(1)
PY
}

prepare() {
    for dir in "$CONFAB_DATA_DIR" "$CONFAB_MODELS_DIR"; do
        mkdir -p "$dir" 2>/dev/null || true
        if [ ! -d "$dir" ] || [ ! -w "$dir" ]; then
            echo "confab-entrypoint: $dir is not a writable folder for user $(id -un) ($(id -u));" \
                 "fix the volume's owner (e.g. chown -R $(id -u) on the host)." >&2
            exit 1
        fi
    done
}

case "${1:-run}" in
    healthcheck)
        healthcheck ;;
    run|serve|worker|models|doctor|kb|voice)
        prepare
        exec "$CONFAB_BIN" "$@" ;;
    *)
        if [ $# -eq 0 ]; then prepare; exec "$CONFAB_BIN" run --no-console; fi
        exec "$@" ;;
esac
