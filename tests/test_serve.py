"""`mlproj serve`: real uvicorn servers on 127.0.0.1 for a checkpoint, a TorchScript and an ONNX model, started
the way the api image starts them and asked over HTTP."""

import csv
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT, compose, train_tiny

MLPROJ = str(Path(sys.executable).parent / "mlproj")
MAX_UPLOAD_MB = 0.05  # 52 kB: the test images are a few kB, so an upload over it is cheap to send
BOUNDARY = "mlproj-test-boundary"


@dataclass(frozen=True)
class Server:
    url: str
    model: Path


@dataclass(frozen=True)
class Models:
    checkpoint: Path
    run_dir: Path
    images: Path
    exported: dict[str, Path]  # format -> file


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """(status, JSON body) for a GET, or a POST when there is a body; 4xx answers are returned, not raised."""
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=body, headers=headers or {}), timeout=30
        ) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def form(files: list[tuple[str, bytes]], field: str = "file") -> bytes:
    """multipart/form-data with one `field` per file, as `curl -F file=@A -F file=@B` sends it."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
        for name, data in files
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def upload(url: str, files: list[tuple[str, bytes]], field: str = "file") -> tuple[int, dict]:
    return request(url, form(files, field), {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


def files_of(*paths: Path) -> list[tuple[str, bytes]]:
    return [(path.name, path.read_bytes()) for path in paths]


def wait_for_health(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mlproj serve exited with {process.returncode}: {process.stdout.read()}")
        try:
            if request(f"{url}/health") == (200, {"status": "ok"}):
                return
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"mlproj serve did not answer /health within {timeout} s")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    """A checkpoint trained on three classes, and its TorchScript and ONNX exports."""
    from hydra.core.global_hydra import GlobalHydra

    from mlproj.export.task import export

    tmp = tmp_path_factory.mktemp("serve")
    images, run_dir = train_tiny(tmp)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    exported = {
        fmt: export(compose("export", [f"ckpt_path={checkpoint}", f"format={fmt}", f"input={images}"], tmp / fmt))
        for fmt in ("torchscript", "onnx")
    }
    GlobalHydra.instance().clear()
    return Models(checkpoint, run_dir, images, exported)


@pytest.fixture(scope="module")
def start_server(models: Models) -> Iterator:
    """Starts `mlproj serve MODEL` processes (at most one per model), all stopped when the module ends."""
    running: dict[Path, Server] = {}
    processes = []

    def start(model: Path) -> Server:
        if model in running:
            return running[model]
        port = free_port()
        # The model path from the environment and the port from the command line: both ways the image passes them.
        env = {**os.environ, "MODEL_PATH": str(model), "PYTHONUNBUFFERED": "1"}
        command = [MLPROJ, "serve", "--port", str(port), "--max-upload-mb", str(MAX_UPLOAD_MB)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        running[model] = Server(f"http://127.0.0.1:{port}", model)
        wait_for_health(running[model].url, process)
        return running[model]

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(models: Models, start_server) -> Server:
    return start_server(models.checkpoint)


def predict_py_rows(models: Models, images: list[Path], tmp_path: Path) -> list[dict[str, str]]:
    """predict.py's CSV rows for `images` (copied into one folder), in file-name order."""
    from mlproj.predict import predict

    folder = tmp_path / "input"
    folder.mkdir()
    for image in images:
        shutil.copy(image, folder / image.name)
    overrides = [f"ckpt_path={models.checkpoint}", f"input={folder}", "accelerator=cpu", "num_workers=0", "top_k=3"]
    with open(predict(compose("predict", overrides, tmp_path / "predict")), newline="") as handle:
        return sorted(csv.DictReader(handle), key=lambda row: Path(row["path"]).name)


@pytest.mark.slow
def test_every_model_format_answers_what_predict_py_answers(models: Models, start_server, tmp_path: Path) -> None:
    images = sorted(
        [
            models.images / "dog" / "dog_001.png",
            models.images / "cat" / "cat_000.jpg",
            models.images / "fox" / "fox_002.jpg",
        ],
        key=lambda p: p.name,
    )
    rows = predict_py_rows(models, images, tmp_path)
    for model in (models.checkpoint, *models.exported.values()):
        status, answer = upload(f"{start_server(model).url}/predict?top_k=3", files_of(*images))
        assert status == 200, answer
        assert [result["file"] for result in answer["results"]] == [image.name for image in images]
        for result, row in zip(answer["results"], rows, strict=True):
            assert [p["label"] for p in result["predictions"]] == [row[f"label{k}"] for k in (1, 2, 3)], model.name
            assert [p["probability"] for p in result["predictions"]] == pytest.approx(
                [float(row[f"prob{k}"]) for k in (1, 2, 3)], abs=1e-5
            )


def test_top_k_is_capped_at_the_number_of_classes(server: Server, models: Models) -> None:
    status, answer = upload(f"{server.url}/predict?top_k=10", files_of(models.images / "fox" / "fox_000.jpg"))
    assert status == 200
    (result,) = answer["results"]
    assert sorted(p["label"] for p in result["predictions"]) == ["cat", "dog", "fox"]
    assert sum(p["probability"] for p in result["predictions"]) == pytest.approx(1.0, abs=1e-5)


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels: what a decompression bomb looks like before it is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def chunked_upload(url: str, data: bytes) -> tuple[int, dict]:
    """A multipart upload sent with chunked transfer encoding: no Content-Length to refuse it by."""
    body = form([("big.png", data)])
    chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
    return request(url, chunks, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})  # type: ignore[arg-type]


def test_bad_requests_get_a_4xx_naming_the_problem_and_the_server_carries_on(server: Server, models: Models) -> None:
    image = models.images / "cat" / "cat_001.png"
    url = f"{server.url}/predict"
    over_limit = os.urandom(int(MAX_UPLOAD_MB * 2**20) + 1000)
    bad_requests = {
        "not an image": (
            upload(url, [("notes.txt", b"not an image at all")]),
            415,
            "notes.txt: not an image Pillow can read",
        ),
        "truncated": (upload(url, [("half.png", image.read_bytes()[:200])]), 415, "half.png: truncated or corrupt"),
        "empty": (upload(url, [("empty.png", b"")]), 400, "empty.png: empty file (0 bytes)"),
        "bomb": (
            upload(url, [("bomb.png", png_header(20000, 20000))]),
            415,
            "bomb.png: over the decompression-bomb limit",
        ),
        "wrong field": (
            upload(url, files_of(image), field="image"),
            422,
            "body.file: Field required: send each image as the multipart form field `file`",
        ),
        "no body": (request(url, b"", {}), 422, "body.file: Field required"),
        "too large": (upload(url, [("big.png", over_limit)]), 413, "request of "),
        "too large, chunked": (chunked_upload(url, over_limit), 413, "big.png: "),
        "bad top_k": (upload(f"{url}?top_k=0", files_of(image)), 422, "query.top_k: Input should be greater than"),
        "one bad file of two": (upload(url, [*files_of(image), ("x.txt", b"text")]), 415, "x.txt: not an image"),
    }
    for name, ((status, answer), expected_status, detail) in bad_requests.items():
        assert status == expected_status, (name, answer)
        assert isinstance(answer["detail"], str) and answer["detail"].startswith(detail), (name, answer)
        assert "\n" not in answer["detail"]
    assert "over the 0.05 MB upload limit (mlproj serve --max-upload-mb)" in bad_requests["too large"][0][1]["detail"]
    assert request(f"{server.url}/health") == (200, {"status": "ok"})
    assert upload(url, files_of(image))[0] == 200


def test_metadata_names_the_model_its_data_version_and_commit(server: Server, models: Models) -> None:
    summary = json.loads((models.run_dir / "summary.json").read_text())
    status, metadata = request(f"{server.url}/metadata")
    assert status == 200
    assert metadata["backbone"] == "resnet10t"
    assert metadata["classes"] == ["cat", "dog", "fox"]
    assert metadata["git_commit"] == summary["git_commit"]
    assert metadata["data_version"] == summary["data_version"]
    assert metadata["format"] == "checkpoint"
    assert metadata["preprocessing"]["input_size"] == [3, 32, 32]


def prometheus(url: str) -> dict[tuple[str, tuple], float]:
    """/metrics parsed with prometheus_client's own parser: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_requests_by_status_latency_and_predicted_classes(server: Server, models: Models) -> None:
    images = [models.images / "dog" / "dog_002.jpg", models.images / "fox" / "fox_001.png"]
    ok = (("route", "/predict"), ("status", "200"))
    bad = (("route", "/predict"), ("status", "415"))
    before = prometheus(server.url)
    status, answer = upload(f"{server.url}/predict", files_of(*images))
    assert status == 200
    assert upload(f"{server.url}/predict", [("a.txt", b"text")])[0] == 415
    after = prometheus(server.url)

    def grew(key: tuple[str, tuple]) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew(("mlproj_requests_total", ok)) == 1
    assert grew(("mlproj_requests_total", bad)) == 1
    assert grew(("mlproj_request_seconds_count", (("route", "/predict"),))) == 2
    assert grew(("mlproj_request_seconds_bucket", (("le", "+Inf"), ("route", "/predict")))) == 2
    top1 = [result["predictions"][0]["label"] for result in answer["results"]]
    for label in set(top1):
        assert grew(("mlproj_predictions_total", (("label", label),))) == top1.count(label)


@pytest.mark.slow
def test_200_concurrent_requests_all_succeed(server: Server, models: Models) -> None:
    """The load test's own client, in its own process: every request answered, none over its timeout."""
    image = models.images / "cat" / "cat_002.jpg"
    command = [sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), server.url, str(image)]
    result = subprocess.run(
        [*command, "--requests", "200", "--timeout", "30"], capture_output=True, text=True, timeout=60
    )
    report = json.loads(result.stdout)
    print(f"200 concurrent requests: {report}")
    assert result.returncode == 0 and report["errors"] == 0, report
    assert report["requests"] == 200
    assert request(f"{server.url}/health") == (200, {"status": "ok"})


def test_the_demo_answers_what_the_api_answers(server: Server, models: Models) -> None:
    from mlproj.serve.demo import label_scores
    from mlproj.serve.predictor import Predictor

    image = models.images / "dog" / "dog_003.png"
    predictor = Predictor.load(str(models.exported["onnx"]))
    scores = label_scores(predictor, str(image), top_k=3)
    _, answer = upload(f"{server.url}/predict?top_k=3", files_of(image))
    (result,) = answer["results"]
    assert list(scores) == [p["label"] for p in result["predictions"]]
    assert list(scores.values()) == pytest.approx([p["probability"] for p in result["predictions"]], abs=1e-5)


def test_the_demo_builds_a_gradio_interface_or_says_how_to_install_it(
    models: Models, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlproj.cli import one_line_errors
    from mlproj.serve.demo import build_demo, main
    from mlproj.serve.predictor import Predictor

    try:
        import gradio
    except ImportError:
        with pytest.raises(SystemExit) as exit_status, one_line_errors():
            main([str(models.exported["onnx"])])
        assert exit_status.value.code == 2
        assert capsys.readouterr().err.strip() == "error: mlproj demo needs Gradio: pip install -e '.[demo]'"
        return
    demo = build_demo(Predictor.load(str(models.exported["onnx"])))
    assert isinstance(demo, gradio.Interface)


def test_a_missing_model_is_one_line_and_exit_status_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlproj.cli import one_line_errors
    from mlproj.serve import main

    monkeypatch.delenv("MODEL_PATH", raising=False)
    with pytest.raises(SystemExit) as exit_status, one_line_errors():
        main([])
    assert exit_status.value.code == 2
    assert "give MODEL_PATH or set the MODEL_PATH environment variable" in capsys.readouterr().err

    absent = tmp_path / "absent.ckpt"
    with pytest.raises(SystemExit) as exit_status, one_line_errors():
        main([str(absent)])
    assert exit_status.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: ckpt_path={absent} does not exist: give a .ckpt file from a run's checkpoints/ folder"
    ]


def test_an_exported_model_without_its_card_is_one_line_and_exit_status_2(
    models: Models, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlproj.cli import one_line_errors
    from mlproj.serve import main

    alone = tmp_path / "model.onnx"
    shutil.copy(models.exported["onnx"], alone)
    with pytest.raises(SystemExit) as exit_status, one_line_errors():
        main([str(alone)])
    assert exit_status.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {alone} has no model.onnx.json beside it (classes and preprocessing): export it with"
        " `mlproj export`, which writes both"
    ]
