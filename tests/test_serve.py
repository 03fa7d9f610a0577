"""`mlproj serve`: real uvicorn servers on 127.0.0.1 for a checkpoint, a TorchScript and an ONNX model, started
the way the api image starts them and asked over HTTP."""

import csv
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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


def serve_process(model: Path, port: int, *options: str) -> subprocess.Popen:
    """`mlproj serve` as the api image starts it: the model and the port from the environment (Cloud Run sets PORT).
    A pass waits up to 50 ms for images still being decoded, so concurrent test requests share passes."""
    env = {**os.environ, "MODEL_PATH": str(model), "PORT": str(port), "PYTHONUNBUFFERED": "1"}
    command = [MLPROJ, "serve", "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-batch-delay-ms", "50", *options]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def start_server(models: Models) -> Iterator:
    """Starts `mlproj serve MODEL` processes (at most one per model), all stopped when the module ends."""
    running: dict[Path, Server] = {}
    processes = []

    def start(model: Path) -> Server:
        if model in running:
            return running[model]
        port = free_port()
        process = serve_process(model, port)
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


def predict_py_rows(models: Models, images: list[Path], tmp_path: Path, *options: str) -> list[dict[str, str]]:
    """predict.py's CSV rows for `images` (copied into one folder), in file-name order."""
    from mlproj.predict import predict

    folder = tmp_path / "input"
    folder.mkdir()
    for image in images:
        shutil.copy(image, folder / image.name)
    overrides = [f"ckpt_path={models.checkpoint}", f"input={folder}", "accelerator=cpu", "num_workers=0", "top_k=3"]
    overrides += options
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


@pytest.mark.slow
def test_test_time_augmentation_serves_what_predict_py_answers_with_it(models: Models, tmp_path: Path) -> None:
    images = [models.images / "cat" / "cat_000.jpg", models.images / "fox" / "fox_002.jpg"]
    rows = predict_py_rows(models, images, tmp_path, "tta=flip_shift")
    port = free_port()
    process = serve_process(models.checkpoint, port, "--tta", "flip_shift")
    try:
        wait_for_health(f"http://127.0.0.1:{port}", process)
        assert request(f"http://127.0.0.1:{port}/metadata")[1]["tta"] == "flip_shift"
        status, answer = upload(f"http://127.0.0.1:{port}/predict?top_k=3", files_of(*images))
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert status == 200, answer
    for result, row in zip(answer["results"], rows, strict=True):
        assert [p["label"] for p in result["predictions"]] == [row[f"label{k}"] for k in (1, 2, 3)]
        assert [p["probability"] for p in result["predictions"]] == pytest.approx(
            [float(row[f"prob{k}"]) for k in (1, 2, 3)], abs=1e-5
        )


def concurrently(url: str, uploads: list[list[tuple[str, bytes]]]) -> list[tuple[int, dict]]:
    """Each upload as its own request, all sent at once."""
    with ThreadPoolExecutor(len(uploads)) as pool:
        return list(pool.map(lambda files: upload(url, files), uploads))


def forward_passes(url: str) -> tuple[float, float]:
    """(forward passes, images in them) so far, from /metrics."""
    samples = prometheus(url)
    return samples[("mlproj_batch_size_count", ())], samples[("mlproj_batch_size_sum", ())]


@pytest.mark.slow
def test_concurrent_requests_share_forward_passes_and_get_what_each_image_alone_gets(
    models: Models, start_server
) -> None:
    from mlproj.serve.predictor import Predictor, decode_upload

    images = sorted(models.images.rglob("*_00[0-3].*"))  # 12: PNG and JPEG, every class
    for model in (models.checkpoint, *models.exported.values()):
        server = start_server(model)
        passes, counted = forward_passes(server.url)
        answers = concurrently(f"{server.url}/predict?top_k=3", [files_of(image) for image in images])
        passes_after, counted_after = forward_passes(server.url)
        assert counted_after - counted == len(images)
        assert passes_after - passes < len(images), f"{model.name}: no two requests shared a forward pass"
        predictor = Predictor.load(str(model))
        for image, (status, answer) in zip(images, answers, strict=True):
            assert status == 200, answer
            (alone,) = predictor.top_k([decode_upload(image.read_bytes())], 3)  # a forward pass of this image alone
            (result,) = answer["results"]
            assert [p["label"] for p in result["predictions"]] == [p.label for p in alone], (model.name, image.name)
            assert [p["probability"] for p in result["predictions"]] == pytest.approx(
                [p.probability for p in alone], abs=1e-6
            )


def test_a_bad_image_among_concurrent_requests_fails_only_its_own_request(server: Server, models: Models) -> None:
    good = sorted(models.images.rglob("*.png"))[:6]
    bad = [[("notes.txt", b"not an image at all")], [("half.png", good[0].read_bytes()[:200])]]
    answers = concurrently(f"{server.url}/predict", [files_of(image) for image in good] + bad)
    assert [status for status, _ in answers] == [200] * len(good) + [415, 415]
    assert answers[-2][1]["detail"].startswith("notes.txt: not an image Pillow can read")
    assert answers[-1][1]["detail"].startswith("half.png: truncated or corrupt")
    for image, (_, answer) in zip(good, answers, strict=False):
        (result,) = answer["results"]
        (alone,) = upload(f"{server.url}/predict", files_of(image))[1]["results"]  # as it is answered on its own
        assert [p["label"] for p in result["predictions"]] == [p["label"] for p in alone["predictions"]]
        assert [p["probability"] for p in result["predictions"]] == pytest.approx(
            [p["probability"] for p in alone["predictions"]], abs=1e-6
        )


def test_health_is_503_until_the_model_is_warmed_up(models: Models) -> None:
    from fastapi.testclient import TestClient

    from mlproj.serve.app import create_app
    from mlproj.serve.predictor import Predictor

    app = create_app(Predictor.load(str(models.exported["onnx"])))
    client = TestClient(app)  # not started: the app's lifespan (batch workers, warm-up) has not run
    answer = client.get("/health")
    assert answer.status_code == 503
    assert answer.json() == {"detail": "the model is warming up: send the request again in a moment"}
    assert client.get("/metrics").status_code == 200  # Prometheus may scrape a server that is not ready
    with TestClient(app) as started:
        assert started.get("/health").json() == {"status": "ok"}


def test_a_request_not_answered_within_the_timeout_gets_503(models: Models) -> None:
    from fastapi.testclient import TestClient

    from mlproj.serve.app import create_app
    from mlproj.serve.predictor import Predictor

    image = models.images / "cat" / "cat_000.jpg"
    app = create_app(Predictor.load(str(models.exported["onnx"])), timeout_s=0.001)  # less than a decode takes
    with TestClient(app) as client:
        answer = client.post("/predict", files=[("file", (image.name, image.read_bytes()))])
        assert answer.status_code == 503
        assert answer.json()["detail"].startswith("not answered within 0.001 s (mlproj serve --timeout)")
        assert client.get("/health").json() == {"status": "ok"}


def stalled_upload(port: int, data: bytes) -> tuple[socket.socket, bytes]:
    """A POST /predict whose headers and first half of the body are sent: in flight until the rest comes."""
    body = form([("slow.png", data)])
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    )
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(head.encode() + body[: len(body) // 2])
    return connection, body[len(body) // 2 :]


def wait_in_flight(url: str, count: int) -> None:
    """Until `count` requests are in flight besides the /metrics request asking."""
    deadline = time.monotonic() + 10
    while prometheus(url)[("mlproj_requests_in_flight", ())] != count + 1:
        assert time.monotonic() < deadline, "the stalled upload never reached the app"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_refuses_new_requests_finishes_those_in_flight_then_exits_0(models: Models) -> None:
    image = models.images / "fox" / "fox_000.jpg"
    ports = {"drains": free_port(), "grace runs out": free_port()}
    processes = {
        "drains": serve_process(models.exported["onnx"], ports["drains"], "--port", str(ports["drains"])),
        "grace runs out": serve_process(models.exported["onnx"], ports["grace runs out"], "--grace-period", "1"),
    }
    try:
        for name, process in processes.items():
            wait_for_health(f"http://127.0.0.1:{ports[name]}", process)
        stalled = {name: stalled_upload(port, image.read_bytes()) for name, port in ports.items()}
        for name, port in ports.items():
            wait_in_flight(f"http://127.0.0.1:{port}", 1)
            processes[name].send_signal(signal.SIGTERM)
        url = f"http://127.0.0.1:{ports['drains']}"
        time.sleep(0.3)
        refused = "the server is shutting down: send the request again (to another instance)"
        assert request(f"{url}/health") == (503, {"detail": refused})
        assert upload(f"{url}/predict", files_of(image)) == (503, {"detail": refused})
        connection, rest = stalled["drains"]
        connection.sendall(rest)
        answer = connection.makefile("rb").read()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b'"file":"slow.png"' in answer
        assert processes["drains"].wait(10) == 0
        began = time.monotonic()
        assert processes["grace runs out"].wait(15) == 0  # the stalled upload is dropped after 1 s
        assert "grace period over: dropping 1 requests in flight" in processes["grace runs out"].stdout.read()
        assert time.monotonic() - began < 10
    finally:
        for process in processes.values():
            process.kill()
            process.wait()


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
    assert metadata["temperature"] == 1.0 and metadata["tta"] is None, "not calibrated, no test-time augmentation"


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
    assert grew(("mlproj_batch_size_count", ())) == 1  # the two images in one forward pass; the text file in none
    assert grew(("mlproj_batch_size_sum", ())) == 2
    assert after[("mlproj_queue_depth", ())] == 0
    top1 = [result["predictions"][0]["label"] for result in answer["results"]]
    for label in set(top1):
        assert grew(("mlproj_predictions_total", (("label", label),))) == top1.count(label)


@pytest.mark.slow
def test_200_concurrent_requests_all_succeed(server: Server, models: Models) -> None:
    """The load test's own client, in its own processes: every request answered, none over its timeout."""
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
    alone = json.loads(subprocess.run([*command, "--requests", "1"], capture_output=True, text=True).stdout)
    assert alone["requests"] == 1 and alone["errors"] == 0 and alone["p50_ms"] == alone["p99_ms"]


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
        f"error: mlproj serve MODEL_PATH={absent} does not exist: a .ckpt file (or gs:// URL), or a .pt / .onnx file"
        " written by `mlproj export`"
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


def test_workers_share_the_cores_between_their_threads() -> None:
    """(Bad --workers, --threads and the other flags are walked by tests/test_flags.py.)"""
    from mlproj.serve.command import cores, workers_and_threads

    assert workers_and_threads("model.onnx", None, None) == (cores(), 1)
    assert workers_and_threads("best.ckpt", None, None) == (1, cores())
    assert workers_and_threads("model.pt", 2, None) == (2, max(1, cores() // 2))
    assert workers_and_threads("model.onnx", 2, 3) == (2, 3)


def test_onnx_runtime_sessions_take_the_thread_count_of_a_worker(
    models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime reads ORT_INTRA_OP_NUM_THREADS when a session is made without a thread count (the inference
    layer makes them so); without it, a session of every worker would start a thread per core."""
    import torch

    from mlproj.serve.command import limit_threads
    from mlproj.serve.predictor import Predictor

    monkeypatch.setenv("ORT_INTRA_OP_NUM_THREADS", "")  # limit_threads sets it; monkeypatch puts it back
    torch_threads = torch.get_num_threads()
    try:
        limit_threads(1)
        before = len(os.listdir("/proc/self/task"))
        Predictor.load(str(models.exported["onnx"]))
        assert len(os.listdir("/proc/self/task")) == before, "the session started intra-op threads of its own"
    finally:
        torch.set_num_threads(torch_threads)
