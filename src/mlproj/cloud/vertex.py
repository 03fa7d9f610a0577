"""`mlproj vertex submit`: train on Vertex AI as a CustomJob that runs `python train.py OVERRIDES` on every node, or
(`--task prepare`) write a data set's shards into the bucket as a CPU job running `mlproj prepare OVERRIDES`.

The spec is built from plain Python so `--dry-run` stays quick and works without the cloud extra;
google-cloud-aiplatform is imported only to submit.
"""

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mlproj.cloud.secrets import SECRET_VAR, check_secret_version
from mlproj.composition import compose
from mlproj.errors import ConfigError
from mlproj.flags import FlagParser, check_paths
from mlproj.knobs import Knob

DEFAULT_REGION = "us-central1"
DEFAULT_MACHINE_TYPE = "n1-standard-8"
DEFAULT_ACCELERATOR = "NVIDIA_TESLA_T4"
DEFAULT_REPO = "mlproj"  # the Artifact Registry repository cloudbuild.yaml pushes `train` to
TASKS = ("train", "prepare")
TASK_VAR = "MLPROJ_TASK"  # read by the image's entrypoint (dockerfiles/train-entrypoint.sh): which command to run
# Set from --nodes and --gpus, so the flags and the overrides can never disagree.
FLAG_KEYS = {
    "trainer.num_nodes": "--nodes",
    "trainer.devices": "--gpus",
    "trainer.accelerator": "--gpus",
}


@dataclass(frozen=True)
class JobRequest:
    """What one `mlproj vertex submit` asks for; `job_spec` turns it into the CustomJobSpec body."""

    overrides: tuple[str, ...]
    image: str
    output_dir: str
    display_name: str
    machine_type: str = DEFAULT_MACHINE_TYPE
    accelerator: str = DEFAULT_ACCELERATOR
    gpus: int = 1
    nodes: int = 1
    spot: bool = False
    timeout_hours: float | None = None
    wandb_secret: str | None = None
    service_account: str | None = None
    dvc_pull: bool = False
    task: str = "train"


def prepare_args(request: JobRequest) -> list[str]:
    """`mlproj prepare` writes the shards where every later train job reads them: into the bucket, on CPUs."""
    if request.gpus or request.nodes != 1:
        raise ConfigError(
            f"--task prepare runs on one CPU machine: drop --gpus {request.gpus} and --nodes {request.nodes}"
            " (a larger --machine-type gives it more processes)"
        )
    shards = [o.split("=", 1)[1] for o in request.overrides if o.split("=", 1)[0] == "shards"]
    if not shards or not shards[-1].startswith("gs://"):
        raise ConfigError(
            "--task prepare writes shards into the bucket: add shards=gs://BUCKET/PATH (train jobs then read them"
            " with data.shards=gs://BUCKET/PATH)"
        )
    return list(request.overrides)


def container_args(request: JobRequest) -> list[str]:
    """The user's Hydra overrides plus the trainer keys that make the nodes and GPUs one DDP job."""
    for override in request.overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if "=" not in override:
            raise ConfigError(
                f"{override!r} is not a Hydra override: give KEY=VALUE, e.g. experiment=mushroom_resnet50"
            )
        if key in FLAG_KEYS:
            raise ConfigError(f"{override} is set by {FLAG_KEYS[key]} on Vertex AI: drop it and use {FLAG_KEYS[key]}")
    if request.task == "prepare":
        return prepare_args(request)
    devices = max(request.gpus, 1)
    args = [
        *request.overrides,
        f"trainer.accelerator={'gpu' if request.gpus else 'cpu'}",
        f"trainer.devices={devices}",
        f"trainer.num_nodes={request.nodes}",
    ]
    user_strategy = any(o.split("=", 1)[0].lstrip("+") == "trainer.strategy" for o in request.overrides)
    if devices * request.nodes > 1 and not user_strategy:
        args.append("trainer.strategy=ddp")
    return args


def job_spec(request: JobRequest) -> dict[str, Any]:
    """The CustomJobSpec as camelCase JSON: the body of `gcloud ai custom-jobs create --config`."""
    if not request.output_dir.startswith("gs://"):
        raise ConfigError(f"--output-dir {request.output_dir} is not a gs:// URI: give gs://BUCKET/PATH")
    pools = [worker_pool(request, replicas=1)]  # pool 0: the primary, node 0
    if request.nodes > 1:
        pools.append(worker_pool(request, replicas=request.nodes - 1))  # pool 1: nodes 1..N-1
    spec: dict[str, Any] = {
        "workerPoolSpecs": pools,
        # Vertex sets AIP_CHECKPOINT_DIR and AIP_MODEL_DIR under this prefix, one per job.
        "baseOutputDirectory": {"outputUriPrefix": f"{request.output_dir.rstrip('/')}/{request.display_name}"},
    }
    scheduling: dict[str, Any] = {}
    if request.spot:
        scheduling |= {"strategy": "SPOT", "restartJobOnWorkerRestart": True}
    if request.timeout_hours is not None:
        scheduling["timeout"] = f"{round(request.timeout_hours * 3600)}s"
    if scheduling:
        spec["scheduling"] = scheduling
    if request.service_account:
        spec["serviceAccount"] = request.service_account
    return spec


def worker_pool(request: JobRequest, replicas: int) -> dict[str, Any]:
    """One WorkerPoolSpec; every pool runs the same machine and container."""
    machine: dict[str, Any] = {"machineType": request.machine_type}
    if request.gpus:
        machine |= {"acceleratorType": request.accelerator, "acceleratorCount": request.gpus}
    # The train image's entrypoint is `python train.py "$@"` (dockerfiles/train-entrypoint.sh): args are overrides.
    container: dict[str, Any] = {"imageUri": request.image, "args": container_args(request)}
    env = []
    if request.wandb_secret:
        # The secret's resource name, never the key: the container reads it at start (mlproj.cloud.secrets).
        env.append({"name": SECRET_VAR, "value": check_secret_version(request.wandb_secret, "--wandb-secret")})
    if request.dvc_pull:
        env.append({"name": "DVC_PULL", "value": "true"})  # the entrypoint runs `dvc pull` before training
    if request.task != "train":
        env.append({"name": TASK_VAR, "value": request.task})
    if env:
        container["env"] = env
    return {"machineSpec": machine, "replicaCount": replicas, "containerSpec": container}


def spec_yaml(spec: dict[str, Any], display_name: str, project: str | None, region: str) -> str:
    """The spec as YAML, headed by the gcloud command that submits it."""
    import yaml

    project_flag = f" --project={project}" if project else ""
    header = (
        "# Vertex AI CustomJobSpec. Submit with:\n"
        f"#   gcloud ai custom-jobs create{project_flag} --region={region} --display-name={display_name}"
        " --config=FILE\n"
    )
    return header + yaml.safe_dump(spec, sort_keys=False)


def submit(spec: dict[str, Any], display_name: str, project: str | None, region: str) -> str:
    """Create the job with the caller's application-default credentials; return its resource name."""
    try:
        import google.auth
        from google.api_core.exceptions import GoogleAPICallError
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import aiplatform_v1
        from google.protobuf import json_format
    except ImportError as error:
        raise ConfigError(
            "submitting needs google-cloud-aiplatform: pip install 'mlproj[cloud]', or print the spec with --dry-run"
        ) from error
    try:
        credentials, credentials_project = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
    except DefaultCredentialsError as error:
        raise ConfigError(
            "no Google Cloud credentials: run `gcloud auth application-default login` or set "
            "GOOGLE_APPLICATION_CREDENTIALS, or print the spec with --dry-run"
        ) from error
    project = project or credentials_project
    if not project:
        raise ConfigError("no Google Cloud project: pass --project or set GOOGLE_CLOUD_PROJECT")
    try:
        job_spec_pb = json_format.ParseDict(spec, aiplatform_v1.CustomJobSpec.pb(aiplatform_v1.CustomJobSpec()))
    except json_format.ParseError as error:
        raise ConfigError(f"the job spec is not a valid Vertex AI CustomJobSpec: {error}") from error
    client = aiplatform_v1.JobServiceClient(
        credentials=credentials, client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"}
    )
    job = aiplatform_v1.CustomJob(display_name=display_name, job_spec=aiplatform_v1.CustomJobSpec.wrap(job_spec_pb))
    try:
        created = client.create_custom_job(parent=f"projects/{project}/locations/{region}", custom_job=job, timeout=120)
    except GoogleAPICallError as error:
        raise ConfigError(f"Vertex AI refused the job in projects/{project}/locations/{region}: {error}") from error
    return created.name


def default_display_name(overrides: Sequence[str], task: str = "train") -> str:
    experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), "train")
    prefix = "mlproj" if task == "train" else f"mlproj-{task}"
    return f"{prefix}-{experiment}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


def default_image(project: str | None, region: str, repo: str) -> str:
    if not project:
        raise ConfigError("--image not given and no project to name the default: pass --image URI or --project")
    return f"{region}-docker.pkg.dev/{project}/{repo}/train:latest"


def parser() -> FlagParser:
    """`submit`'s flags and Hydra overrides."""
    sub = FlagParser(
        prog="mlproj vertex submit",
        description="Train on Vertex AI: one CustomJob running `python train.py OVERRIDES` on each node.",
    )
    sub.add_argument("overrides", nargs="*", help="Hydra overrides for train.py, e.g. experiment=mushroom_resnet50")
    sub.add_argument("--project", default=os.environ.get("GOOGLE_CLOUD_PROJECT"), help="default: $GOOGLE_CLOUD_PROJECT")
    sub.add_argument("--region", default=DEFAULT_REGION)
    sub.add_argument("--output-dir", required=True, help="gs://BUCKET/PATH: checkpoints and model go under it per job")
    sub.add_argument("--image", help="training image; default REGION-docker.pkg.dev/PROJECT/REPO/train:latest")
    sub.add_argument("--repo", default=DEFAULT_REPO, help="Artifact Registry repository of the default image")
    sub.add_argument("--machine-type", default=DEFAULT_MACHINE_TYPE)
    sub.add_argument("--accelerator", default=DEFAULT_ACCELERATOR, help="a Vertex AcceleratorType, e.g. NVIDIA_L4")
    sub.add_argument(
        "--task",
        type=Knob(str, "what the job runs", choices=TASKS),
        metavar="{" + ",".join(TASKS) + "}",
        default="train",
        note="prepare: write shards into the bucket (mlproj prepare ... shards=gs://...) on CPUs",
    )
    sub.add_argument(
        "--gpus",
        type=Knob(int, "GPUs per node (0: CPU only)", low=0),
        note="default: 1 to train, 0 to prepare",
    )
    sub.add_argument(
        "--nodes",
        type=Knob(int, "machines in the job", low=1),
        default=1,
        note="more than one trains with multi-node DDP",
    )
    sub.add_argument("--spot", action="store_true", help="Spot VMs; the job restarts and resumes when preempted")
    sub.add_argument(
        "--timeout-hours",
        type=Knob(float, "hours after which the job is stopped", low=0, exclusive=True),
    )
    sub.add_argument("--wandb-secret", help="projects/P/secrets/NAME/versions/latest: the W&B key, read at start")
    sub.add_argument("--service-account", help="the job's service account (it needs the secret and the bucket)")
    sub.add_argument("--dvc-pull", action="store_true", help="run `dvc pull` in the container before training")
    sub.add_argument("--display-name", help="default: mlproj-EXPERIMENT-TIME")
    sub.add_argument("--dry-run", action="store_true", help="print the spec as YAML for gcloud and submit nothing")
    return sub


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """`submit` and its flags; Hydra overrides may sit anywhere among the flags."""
    sub = parser()
    if argv[:1] in (["-h"], ["--help"]):
        sub.print_help()
        sys.exit(0)
    if argv[:1] != ["submit"]:
        sub.error(f"unknown command {' '.join(argv[:1]) or '(none)'}: the command is `mlproj vertex submit`")
    return sub.parse_intermixed_args(argv[1:])


def main(argv: Sequence[str] | None = None) -> None:
    """`mlproj vertex submit`; a ConfigError ends as one line through mlproj.cli.one_line_errors."""
    args = check_paths(parser(), parse_args(sys.argv[1:] if argv is None else argv))
    image = args.image or default_image(args.project, args.region, args.repo)
    display_name = args.display_name or default_display_name(args.overrides, args.task)
    request = JobRequest(
        overrides=tuple(args.overrides),
        image=image,
        output_dir=args.output_dir,
        display_name=display_name,
        machine_type=args.machine_type,
        accelerator=args.accelerator,
        gpus=(1 if args.task == "train" else 0) if args.gpus is None else args.gpus,
        nodes=args.nodes,
        spot=args.spot,
        timeout_hours=args.timeout_hours,
        wandb_secret=args.wandb_secret,
        service_account=args.service_account,
        dvc_pull=args.dvc_pull,
        task=args.task,
    )
    spec = job_spec(request)
    compose(args.task, container_args(request))  # as the container will, before anything is printed or paid for
    if args.dry_run:
        print(spec_yaml(spec, display_name, args.project, args.region), end="")
        return
    name = submit(spec, display_name, args.project, args.region)
    print(f"submitted {name}\nfollow it with: gcloud ai custom-jobs stream-logs {name}")
