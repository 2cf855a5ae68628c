#!/usr/bin/env bash
# One tune worker of a SLURM job array (docs/tuning.md): a clone of its own, the baseline's outputs
# from the DVC remote, then trials of the shared study until its budget or SLURM's SIGTERM.
#   srun bash slurm/tune-worker.sh --study NAME --trials N --minutes M   (tune's own options)
# Needs GIT_REMOTE (the git remote to clone) and TUNE_STORAGE (the study's PostgreSQL URL).
set -euo pipefail
: "${GIT_REMOTE:?set GIT_REMOTE to the git remote to clone}"
: "${TUNE_STORAGE:?set TUNE_STORAGE to the study database, postgresql://user@host/db}"
d="${TMPDIR:-/tmp}/mnist-${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}-${SLURM_ARRAY_TASK_ID:-0}"
if [ -e "$d" ]; then
  # A requeued task finds its clone again, with any experiment it could not push yet; only its own
  # (the name is predictable, and its Makefile is run below).
  if [ ! -O "$d" ] || [ -n "$(find "$d" -maxdepth 0 -perm /022)" ]; then
    echo "tune-worker: $d exists but is not this user's alone; remove it, or set TMPDIR" >&2
    exit 1
  fi
else
  mkdir -m 700 "$d"
  git clone -q "$GIT_REMOTE" "$d"
fi
cd "$d"
make install-tune install-ssh >/dev/null
.venv/bin/dvc pull -q
# exec: SLURM's SIGTERM reaches the worker itself, which fails its running trial, queues it again
# for another worker, and exits.
exec .venv/bin/python -m mnist_pipeline.tune "$@"
