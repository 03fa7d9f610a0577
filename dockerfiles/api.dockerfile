# The serving image: `mlproj serve` on port $PORT (8080 here; Cloud Run sets it too) for the checkpoint at
# $MODEL_PATH, a path in the container or a gs:// URL; a container argument replaces it:
#   docker run -p 8080:8080 -v "$PWD/checkpoints:/models" IMAGE                 # serves /models/model.ckpt
#   docker run -p 8080:8080 IMAGE gs://BUCKET/runs/RUN/checkpoints/best.ckpt
# Build from the repository root: docker build -f dockerfiles/api.dockerfile -t mlproj-api .
FROM python:3.11.13-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8080 \
    MODEL_PATH=/models/model.ckpt

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A numeric, unprivileged user that orchestrators can verify is not root.
RUN groupadd --gid 10001 mlproj \
    && useradd --create-home --uid 10001 --gid mlproj --shell /bin/bash mlproj
WORKDIR /app

# CPU wheels: serving runs on CPUs, and the CUDA build adds gigabytes to every cold start. The same torch as the
# training image, and pip is held to it for everything after.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.7.1 torchvision==0.22.1 \
    && pip list --format=freeze | grep -E '^(torch|torchvision)==' > /etc/pip-constraints.txt

# The dependencies, from pyproject.toml alone (an empty package stands in for the code), so that a code change
# rebuilds only the layers below.
COPY pyproject.toml ./
RUN mkdir -p src/mlproj \
    && touch README.md src/mlproj/__init__.py \
    && pip install --no-cache-dir --constraint /etc/pip-constraints.txt '.[serve,gcs]' \
    && pip uninstall --yes mlproj \
    && rm -rf README.md src build

COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build src/mlproj.egg-info

USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["mlproj", "serve", "--host", "0.0.0.0"]
