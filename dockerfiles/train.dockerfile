# The training image: `docker run --gpus all IMAGE [OVERRIDES...]` is `python train.py [OVERRIDES...]`, so the
# container's arguments are Hydra overrides; with -e DVC_PULL=true it runs `dvc pull` first (train-entrypoint.sh).
# Build from the repository root: docker build -f dockerfiles/train.dockerfile -t mlproj-train .
#
# PyTorch, torchvision, CUDA and cuDNN come from the base image; pip is held to its torch (constraints below) so
# that installing the project never downloads a second, different torch.
FROM pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A numeric, unprivileged user (uid 10001, clear of the base's own users) that orchestrators can verify is not
# root. Training writes logs/, data/ and .cache/ under /app, so it owns /app.
RUN groupadd --gid 10001 mlproj \
    && useradd --create-home --uid 10001 --gid mlproj --shell /bin/bash mlproj \
    && mkdir /app \
    && chown 10001:10001 /app
WORKDIR /app

# The dependencies, from pyproject.toml alone (with an empty package standing in for the code): this layer is
# rebuilt when the dependencies change, not when the code does.
COPY pyproject.toml ./
RUN pip list --format=freeze | grep -E '^(torch|torchvision)==' > /etc/pip-constraints.txt \
    && mkdir -p src/mlproj \
    && touch README.md src/mlproj/__init__.py \
    && pip install --no-cache-dir --constraint /etc/pip-constraints.txt '.[dvc,gcs,cloud]' \
    && pip uninstall --yes mlproj \
    && rm -rf README.md src build

# The code (what .dockerignore lets through), installed without touching the dependencies.
COPY --chown=10001:10001 . .
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build src/mlproj.egg-info

USER 10001:10001
ENTRYPOINT ["bash", "dockerfiles/train-entrypoint.sh"]
