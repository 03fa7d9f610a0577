# The serving image: `mlproj serve` on port $PORT (8080 here; Cloud Run sets it too) for the checkpoint at
# $MODEL_PATH, a path in the container or a gs:// URL; a container argument replaces it:
#   docker run -p 8080:8080 -v "$PWD/checkpoints:/models" IMAGE                 # serves /models/model.ckpt
#   docker run -p 8080:8080 IMAGE gs://BUCKET/runs/RUN/checkpoints/best.ckpt
# Build from the repository root: `docker build -f dockerfiles/api.dockerfile -t mlproj-api .` (Cloud Build:
# cloudbuild.yaml), or `make images` here, with buildah on a local Debian base (tools/images.sh).
#
# Every package is installed at the version constraints.txt pins (the venv the test suite ran in). By default torch
# comes from PyTorch's CPU index: serving runs on CPUs, and the CUDA build adds gigabytes to every cold start. The
# lock's `torch==X` takes the CPU build `X+cpu`; the nvidia-* pins then go unused.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm

# pyproject.toml's dependency list for the image's extras, alone: the layer that installs it is rebuilt when the
# list changes, not when another part of pyproject.toml (a tool's settings) or the code does.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /
RUN python3 -c 'import sys, tomllib; project = tomllib.load(open("/pyproject.toml", "rb"))["project"]; \
print(*project["dependencies"], *(r for extra in sys.argv[1:] for r in project["optional-dependencies"][extra]), sep="\n")' \
    serve gcs > /requirements.txt

FROM ${BASE_IMAGE}

# pip's index settings, seen by the RUN steps only (build arguments do not stay in the image's environment).
ARG PIP_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_EXTRA_INDEX_URL=https://pypi.org/simple
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ARG PIP_CERT

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A numeric, unprivileged user that orchestrators can verify is not root; the packages go into a venv, which
# every base allows (Debian's own Python refuses system-wide installs).
RUN groupadd --gid 10001 mlproj \
    && useradd --create-home --uid 10001 --gid mlproj --shell /bin/bash mlproj \
    && python3 -m venv /opt/venv
WORKDIR /app

# torch and torchvision first, alone: the largest layer, rebuilt only when the lock changes, and the same
# instructions as in train.dockerfile, so that a build of both on one base and index stores and builds it once.
COPY constraints.txt /etc/pip-constraints.txt
RUN pip install --no-cache-dir --constraint /etc/pip-constraints.txt torch torchvision

ENV PORT=8080 \
    MODEL_PATH=/models/model.ckpt

# The other dependencies, with the serve and gcs extras (the requirements stage above).
COPY --from=requirements /requirements.txt /etc/mlproj-requirements.txt
RUN pip install --no-cache-dir --constraint /etc/pip-constraints.txt --requirement /etc/mlproj-requirements.txt

COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build src/mlproj.egg-info

USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["mlproj", "serve", "--host", "0.0.0.0"]
