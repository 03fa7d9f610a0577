# The training image: `docker run --gpus all IMAGE [OVERRIDES...]` is `python train.py [OVERRIDES...]`, so the
# container's arguments are Hydra overrides; with -e DVC_PULL=true it runs `dvc pull` first (train-entrypoint.sh).
# Build from the repository root: `docker build -f dockerfiles/train.dockerfile -t mlproj-train .` (Cloud Build:
# cloudbuild.yaml), or `make images` here, with buildah on a local Debian base (tools/images.sh).
#
# Every package, torch and its CUDA libraries included, is installed at the version constraints.txt pins: the venv
# the test suite ran in (`make lock`). The base brings only Python 3.11 (any Debian or Ubuntu image with python3
# and its venv module): torch's wheels carry CUDA and cuDNN (the nvidia-* packages in the lock), so a CUDA base
# would add a second CUDA, and a base with its own torch a second torch. The driver comes from the GPU host.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

# pyproject.toml's dependency list for the image's extras, alone: the layer that installs it is rebuilt when the
# list changes, not when another part of pyproject.toml (a tool's settings) or the code does.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /
RUN python3 -c 'import sys, tomllib; project = tomllib.load(open("/pyproject.toml", "rb"))["project"]; \
print(*project["dependencies"], *(r for extra in sys.argv[1:] for r in project["optional-dependencies"][extra]), sep="\n")' \
    dvc gcs cloud stream > /requirements.txt

FROM ${BASE_IMAGE}

# pip's index settings, seen by the RUN steps only (build arguments do not stay in the image's environment).
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_CERT

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A numeric, unprivileged user (uid 10001, clear of the base's own users) that orchestrators can verify is not
# root; the packages go into a venv, which every base allows (Debian's own Python refuses system-wide installs).
RUN groupadd --gid 10001 mlproj \
    && useradd --create-home --uid 10001 --gid mlproj --shell /bin/bash mlproj \
    && python3 -m venv /opt/venv
WORKDIR /app

# torch and torchvision first, alone: the largest layer, rebuilt only when the lock changes, and the same
# instructions as in api.dockerfile, so that a build of both on one base stores and builds it once.
COPY constraints.txt /etc/pip-constraints.txt
RUN pip install --no-cache-dir --constraint /etc/pip-constraints.txt torch torchvision

# The NVIDIA container runtime (docker --gpus, GKE, Vertex AI) mounts the driver into containers that ask for it.
# Matplotlib's font list goes where the user can read and update it, built once below instead of at every start.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    MPLCONFIGDIR=/opt/matplotlib

# The other dependencies, with the dvc, gcs, cloud and stream extras (the requirements stage above).
COPY --from=requirements /requirements.txt /etc/mlproj-requirements.txt
RUN pip install --no-cache-dir --constraint /etc/pip-constraints.txt --requirement /etc/mlproj-requirements.txt \
    && python -c 'import matplotlib.font_manager' \
    && chown -R 10001:10001 "$MPLCONFIGDIR"

# The code (what .dockerignore lets through), installed without touching the dependencies. Training writes logs/,
# data/ and .cache/ under /app, so the user owns it.
COPY --chown=10001:10001 . .
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build src/mlproj.egg-info \
    && chown 10001:10001 /app

USER 10001:10001
# bash runs the script, which `exec`s python: the process Docker signals (SIGTERM on a stop or a preemption) is
# the training itself, which then saves a checkpoint and records the run as interrupted.
ENTRYPOINT ["bash", "dockerfiles/train-entrypoint.sh"]
