#!/usr/bin/env bash
# The training image's entrypoint: `python train.py "$@"`, so container arguments are Hydra overrides; with
# MLPROJ_TASK=prepare (`mlproj vertex submit --task prepare`) it runs `mlproj prepare "$@"` instead (shards into the bucket).
# With DVC_PULL=true it first fetches the DVC-tracked data (data.dvc) from the DVC remote. The image holds no
# .git, and DVC refuses a repository initialised with git when .git is missing unless told to work without it.
set -euo pipefail
if [ "${DVC_PULL:-false}" = "true" ]; then
    [ -d .git ] || dvc config --local core.no_scm true
    # The data the .dvc files track, by name: a bare `dvc pull` also fetches dvc.yaml's outputs (earlier runs'
    # checkpoints and results), and fails when they were never pushed.
    mapfile -t tracked < <(find . -name '*.dvc' -type f -not -path './.dvc/*')
    dvc pull "${tracked[@]}"
fi
case "${MLPROJ_TASK:-train}" in
    train) exec python train.py "$@" ;;
    prepare) exec python -m mlproj.cli prepare "$@" ;;
    *) echo "error: MLPROJ_TASK=${MLPROJ_TASK} is not a task: use train or prepare" >&2; exit 2 ;;
esac
