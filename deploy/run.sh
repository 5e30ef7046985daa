#!/usr/bin/env bash
# Serve Leukolab on localhost:8000: the web process, and with REDIS_URL set a Celery worker and beat too.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
if [ -n "${REDIS_URL:-}" ]; then
  "$BIN/celery" -A worker.celery_app worker --concurrency "${WORKER_CONCURRENCY:-1}" --loglevel INFO &
  pids+=($!)
  "$BIN/celery" -A worker.celery_app beat --loglevel INFO --schedule "${LEUKOLAB_VAR_DIR:-var}/celerybeat-schedule" &
  pids+=($!)
fi
"$BIN/gunicorn" -c deploy/gunicorn.conf.py webapp.config.wsgi &
pids+=($!)
echo "Leukolab: http://localhost:8000  (API docs: http://localhost:8000/api/docs/; Ctrl-C stops it)"
wait -n
