"""`mlproj vertex submit` and the W&B key from Secret Manager, checked against Vertex AI's own types, offline."""

import copy
import os
import shutil
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import pytest
import yaml
from google.cloud.aiplatform_v1.types import CustomJobSpec
from google.protobuf import json_format

from mlproj.cloud.secrets import load_wandb_key
from mlproj.cloud.vertex import JobRequest, job_spec
from mlproj.errors import ConfigError

from conftest import ROOT

MLPROJ = shutil.which("mlproj", path=str(Path(sys.executable).parent))
SECRET = "projects/my-project/secrets/wandb-key/versions/latest"
SHELL_KEY = "shell-key-that-must-never-leave-this-machine"
# google.auth must neither find the developer's credentials nor wait for a metadata server.
NO_CREDENTIALS = {
    "NO_GCE_CHECK": "true",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
    "GCE_METADATA_TIMEOUT": "1",
}


def strict_parse(spec: dict) -> CustomJobSpec:
    """What Vertex AI's API would accept: unknown fields, bad enums and bad durations raise ParseError."""
    return CustomJobSpec.wrap(json_format.ParseDict(spec, CustomJobSpec.pb(CustomJobSpec())))


def vertex(*args: str, env: dict[str, str], tmp_path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real `mlproj vertex ...` console script, with no credentials of the developer's in reach."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_"))}
    clean |= NO_CREDENTIALS | {"HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud")} | env
    return subprocess.run(
        [MLPROJ, "vertex", *args], env=clean, capture_output=True, text=True, timeout=timeout, check=False
    )


def request(**fields) -> JobRequest:
    base = {"overrides": ("experiment=digits",), "image": "img:1", "output_dir": "gs://b/runs", "display_name": "j"}
    return JobRequest(**(base | fields))


def test_dry_run_prints_a_multi_node_spot_job_vertex_accepts(tmp_path: Path) -> None:
    result = vertex(
        "submit",
        "experiment=mushroom_resnet50",
        "--nodes=3",
        "--gpus=2",
        "data.root=/gcs/my-bucket/mushrooms",  # overrides may sit among the flags
        "--accelerator=NVIDIA_L4",
        "--machine-type=g2-standard-24",
        "--spot",
        "--timeout-hours=12",
        f"--wandb-secret={SECRET}",
        "--image=us-central1-docker.pkg.dev/p/mlproj/train:abc",
        "--output-dir=gs://my-bucket/vertex/",
        "--display-name=mush",
        "--dry-run",
        env={"WANDB_API_KEY": SHELL_KEY},
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert SHELL_KEY not in result.stdout
    assert "gcloud ai custom-jobs create --region=us-central1 --display-name=mush --config=FILE" in result.stdout
    spec = yaml.safe_load(result.stdout)
    parsed = strict_parse(spec)

    primary, others = parsed.worker_pool_specs
    assert (primary.replica_count, others.replica_count) == (1, 2)
    for pool in (primary, others):
        assert pool.machine_spec.machine_type == "g2-standard-24"
        assert pool.machine_spec.accelerator_type.name == "NVIDIA_L4"
        assert pool.machine_spec.accelerator_count == 2
        assert pool.container_spec.image_uri == "us-central1-docker.pkg.dev/p/mlproj/train:abc"
        assert list(pool.container_spec.args) == [
            "experiment=mushroom_resnet50",
            "data.root=/gcs/my-bucket/mushrooms",
            "trainer.accelerator=gpu",
            "trainer.devices=2",
            "trainer.num_nodes=3",
            "trainer.strategy=ddp",
        ]
        assert [(e.name, e.value) for e in pool.container_spec.env] == [("WANDB_API_KEY_SECRET", SECRET)]
    assert parsed.base_output_directory.output_uri_prefix == "gs://my-bucket/vertex/mush"
    assert parsed.scheduling.strategy.name == "SPOT"
    assert parsed.scheduling.restart_job_on_worker_restart is True
    assert parsed.scheduling.timeout.total_seconds() == 12 * 3600


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"gpus": 0, "nodes": 2},
        {"gpus": 8, "accelerator": "NVIDIA_H100_80GB", "machine_type": "a3-highgpu-8g", "nodes": 4, "spot": True},
        {"dvc_pull": True, "service_account": "trainer@p.iam.gserviceaccount.com", "timeout_hours": 0.5},
        {"overrides": ("experiment=digits", "trainer.strategy=ddp_find_unused_parameters_true"), "nodes": 2},
    ],
)
def test_every_generated_spec_parses_strictly(fields: dict) -> None:
    parsed = strict_parse(job_spec(request(**fields)))
    nodes = fields.get("nodes", 1)
    assert sum(pool.replica_count for pool in parsed.worker_pool_specs) == nodes
    args = list(parsed.worker_pool_specs[0].container_spec.args)
    assert f"trainer.num_nodes={nodes}" in args
    assert sum(a.startswith("trainer.strategy=") for a in args) == (nodes * max(fields.get("gpus", 1), 1) > 1)


def test_cpu_job_and_dvc_pull_have_no_accelerator_and_ask_the_entrypoint_to_pull() -> None:
    spec = job_spec(request(gpus=0, dvc_pull=True))
    (pool,) = strict_parse(spec).worker_pool_specs
    assert pool.machine_spec.accelerator_count == 0 and pool.machine_spec.accelerator_type.name == (
        "ACCELERATOR_TYPE_UNSPECIFIED"
    )
    assert "trainer.accelerator=cpu" in pool.container_spec.args
    assert [(e.name, e.value) for e in pool.container_spec.env] == [("DVC_PULL", "true")]
    assert "scheduling" not in spec


def prepare_job(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`mlproj vertex submit --task prepare ARGS --dry-run`."""
    return vertex(
        "submit",
        "--task",
        "prepare",
        *args,
        "--output-dir=gs://b/runs",
        "--image=img",
        "--dry-run",
        env={},
        tmp_path=tmp_path,
    )


def test_prepare_task_is_one_cpu_machine_running_mlproj_prepare_into_the_bucket(tmp_path: Path) -> None:
    overrides = ["experiment=imagenet_resnet50_scratch", "shards=gs://b/imagenet-shards"]
    result = prepare_job(overrides, tmp_path)
    assert result.returncode == 0, result.stderr
    spec = yaml.safe_load("\n".join(line for line in result.stdout.splitlines() if not line.startswith("#")))
    (pool,) = strict_parse(spec).worker_pool_specs
    assert list(pool.container_spec.args) == overrides  # no trainer keys: the entrypoint runs mlproj prepare
    assert [(e.name, e.value) for e in pool.container_spec.env] == [("MLPROJ_TASK", "prepare")]
    assert pool.machine_spec.accelerator_count == 0 and pool.replica_count == 1
    assert "--display-name=mlproj-prepare-imagenet_resnet50_scratch-" in result.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["data=imagenet"], "add shards=gs://BUCKET/PATH"),
        (["shards=/local/folder"], "add shards=gs://BUCKET/PATH"),
        (["shards=gs://b/s", "--gpus", "1"], "drop --gpus 1 and --nodes 1"),
        (["shards=gs://b/s", "--nodes", "2"], "drop --gpus 0 and --nodes 2"),
    ],
)
def test_a_prepare_job_that_could_not_write_the_bucket_is_refused(args: list[str], named: str, tmp_path: Path) -> None:
    result = prepare_job(args, tmp_path)
    assert result.returncode == 2 and named in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("workerPoolSpecs", 0, "containerSpec", "environment"), [{"name": "WANDB_API_KEY", "value": "x"}]),
        (("scheduling", "strategy"), "SPOTTY"),
        (("workerPoolSpecs", 0, "machineSpec", "acceleratorType"), "NVIDIA_TESLA_T4X"),
        (("scheduling", "timeout"), "12h"),
    ],
    ids=["unknown-field", "bad-strategy", "bad-accelerator", "bad-duration"],
)
def test_strict_parse_rejects_what_vertex_would(path: tuple, value: object) -> None:
    """The check above can fail: a wrong field, enum or duration in an otherwise good spec is refused."""
    spec = copy.deepcopy(job_spec(request(spot=True, timeout_hours=1)))
    strict_parse(spec)
    node = spec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(json_format.ParseError):
        strict_parse(spec)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["trainer.devices=2"], "trainer.devices=2 is set by --gpus"),
        (["--nodes=0"], "--nodes 0"),
        (["--output-dir=/local/dir"], "--output-dir /local/dir is not a gs:// URI"),
        (["--wandb-secret=abc123"], "--wandb-secret=abc123 is not a Secret Manager version"),
        (["experiment"], "'experiment' is not a Hydra override"),
        (["experiment=nosuch"], "Could not find 'experiment/nosuch' (one of: cifar100_efficientnet_b0_linear_probe"),
        (["trainer.max_epoch=1"], "Could not override 'trainer.max_epoch'"),
        (["--task=prepare", "--gpus=0", "shards=gs://b/s", "data=nosuch"], "the prepare config does not compose"),
    ],
)
def test_bad_flags_stop_with_one_line(args: list[str], named: str, tmp_path: Path) -> None:
    defaults = ["--image=img:1", "--output-dir=gs://b/runs", "--dry-run"]
    result = vertex("submit", *defaults, *args, env={}, tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and named in result.stderr and result.stderr.count("\n") == 1


def test_submit_without_credentials_says_how_to_get_them(tmp_path: Path) -> None:
    args = ["submit", "experiment=digits", "--project=p", "--output-dir=gs://b/runs"]
    result = vertex(*args, env={}, tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: no Google Cloud credentials")
    assert "gcloud auth application-default login" in result.stderr


class SecretManagerStandIn:
    """Secret Manager's AccessSecretVersion over real gRPC on 127.0.0.1, holding one secret version."""

    def __init__(self, name: str, payload: bytes) -> None:
        import grpc
        from google.cloud.secretmanager_v1 import types

        def access(request: types.AccessSecretVersionRequest, context: grpc.ServicerContext):
            self.requests.append(request.name)
            if request.name != name:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, f"Permission denied on {request.name}")
            return types.AccessSecretVersionResponse(name=name, payload=types.SecretPayload(data=payload))

        handler = grpc.unary_unary_rpc_method_handler(
            access,
            request_deserializer=types.AccessSecretVersionRequest.deserialize,
            response_serializer=types.AccessSecretVersionResponse.serialize,
        )
        self.requests: list[str] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        service = "google.cloud.secretmanager.v1.SecretManagerService"
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"AccessSecretVersion": handler}),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def client(self):
        import grpc
        from google.cloud.secretmanager_v1 import SecretManagerServiceClient
        from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
            SecretManagerServiceGrpcTransport,
        )

        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        return SecretManagerServiceClient(transport=SecretManagerServiceGrpcTransport(channel=channel))


@pytest.fixture
def secret_manager():
    stand_in = SecretManagerStandIn(SECRET, b"key-from-secret-manager\n")
    yield stand_in
    stand_in.server.stop(None)


def test_container_reads_the_wandb_key_from_secret_manager(secret_manager, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY_SECRET", SECRET)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    load_wandb_key(secret_manager.client())
    assert os.environ["WANDB_API_KEY"] == "key-from-secret-manager"
    assert secret_manager.requests == [SECRET]


def test_a_key_already_in_the_environment_is_kept(secret_manager, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY_SECRET", SECRET)
    monkeypatch.setenv("WANDB_API_KEY", "mine")
    load_wandb_key(secret_manager.client())
    assert os.environ["WANDB_API_KEY"] == "mine" and secret_manager.requests == []


def test_a_secret_the_job_may_not_read_is_one_line(secret_manager, monkeypatch) -> None:
    other = "projects/my-project/secrets/other/versions/3"
    monkeypatch.setenv("WANDB_API_KEY_SECRET", other)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"WANDB_API_KEY_SECRET=.*/other/versions/3 could not be read") as error:
        load_wandb_key(secret_manager.client())
    assert "\n" not in str(error.value) and "secretAccessor" in str(error.value)
    assert "WANDB_API_KEY" not in os.environ


def test_train_without_access_to_the_secret_stops_before_the_run(tmp_path: Path) -> None:
    """In the container, train.py reads the secret first; without credentials that is one line, exit 2, no run dir."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "CLOUDSDK_", "WANDB_"))}
    env = clean | NO_CREDENTIALS | {"HOME": str(tmp_path), "WANDB_API_KEY_SECRET": SECRET}
    command = [sys.executable, str(ROOT / "train.py"), "logger=wandb"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: WANDB_API_KEY_SECRET={SECRET} could not be read")
    runs = tmp_path / "logs" / "train" / "runs"
    assert not runs.is_dir() or not any(runs.iterdir())
