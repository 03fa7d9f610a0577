"""The W&B key of a Vertex AI job, read from Secret Manager when the container starts.

A Vertex container's `env` holds plain name/value pairs that anyone who can read the job sees, so
the job spec carries only the secret's resource name in `WANDB_API_KEY_SECRET`; the key itself is
fetched here, before any logger starts, and lives only in this process's environment.
"""

import os
import re
from typing import Any

from mlproj.errors import ConfigError

SECRET_VAR = "WANDB_API_KEY_SECRET"
KEY_VAR = "WANDB_API_KEY"
VERSION_NAME = re.compile(r"projects/[^/]+/secrets/[^/]+/versions/[^/]+")


def check_secret_version(name: str, where: str) -> str:
    """`name` when it is a Secret Manager version resource name, else one line saying what one looks like."""
    if not VERSION_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}={name} is not a Secret Manager version: give projects/PROJECT/secrets/NAME/versions/latest "
            "(or a version number)"
        )
    return name


def load_wandb_key(client: Any = None) -> None:
    """Put the key named by `WANDB_API_KEY_SECRET` into `WANDB_API_KEY`, unless a key is already there.

    `client` is a `SecretManagerServiceClient`; by default one with the job's own credentials.
    """
    name = os.environ.get(SECRET_VAR)
    if not name or os.environ.get(KEY_VAR):
        return
    os.environ[KEY_VAR] = read_secret(check_secret_version(name, SECRET_VAR), client)


def read_secret(name: str, client: Any = None) -> str:
    try:
        from google.api_core.exceptions import GoogleAPICallError
        from google.auth.exceptions import GoogleAuthError
        from google.cloud import secretmanager
    except ImportError as error:
        raise ConfigError(
            f"{SECRET_VAR}={name} needs google-cloud-secret-manager: pip install 'mlproj[cloud]' in the image"
        ) from error
    try:
        client = client or secretmanager.SecretManagerServiceClient()
        response = client.access_secret_version(name=name, timeout=60)
    except (GoogleAuthError, GoogleAPICallError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"{SECRET_VAR}={name} could not be read ({reason}): give the job's service account "
            "roles/secretmanager.secretAccessor on that secret, or unset it and log W&B offline"
        ) from error
    return response.payload.data.decode("utf-8").strip()
