"""The HTTP routes around one loaded Predictor: /predict, /health, /metadata and /metrics.

Every client mistake (no image, a broken one, an empty or oversized upload, a wrong field) is a 4xx JSON answer
`{"detail": "..."}` naming the problem, and the server goes on answering.

A request's images are decoded and cropped in a small thread pool, in parallel with other requests and with the
forward passes, then batched with the images of other requests (`mlproj.serve.batching`): a bad image fails its own
request before it reaches a batch. The server answers 503 while it warms up, once it is stopping (SIGTERM, see
`mlproj.serve.command`), and to a request not answered within `timeout_s`.
"""

import asyncio
import gc
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from fastapi import FastAPI, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from mlproj.serve.batching import Batcher, Batching
from mlproj.serve.metrics import ServeMetrics
from mlproj.serve.predictor import BadImageError, decode_upload

if TYPE_CHECKING:
    from mlproj.serve.predictor import Predictor

MB = 2**20


@dataclass
class Lifecycle:
    """Where the server stands; changed on the event loop thread only."""

    ready: bool = False  # the model is loaded and warmed up
    stopping: bool = False  # SIGTERM came: new requests are refused, those in flight finish
    in_flight: int = 0  # requests admitted and not yet answered

    def refusal(self, path: str) -> str | None:
        """Why a request to `path` gets a 503 now, or None; /metrics is always answered."""
        if path == "/metrics":
            return None
        if self.stopping:
            return "the server is shutting down: send the request again (to another instance)"
        if not self.ready:
            return "the model is warming up: send the request again in a moment"
        return None


def describe_validation(error: RequestValidationError) -> str:
    """FastAPI's list of problems as one line, with the way out when the image field is missing."""
    problems = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        hint = ": send each image as the multipart form field `file`" if problem["loc"][-1] == "file" else ""
        problems.append(f"{where}: {problem['msg']}{hint}")
    return "; ".join(problems)


def create_app(
    predictor: "Predictor", max_upload_mb: float = 10, batching: Batching | None = None, timeout_s: float = 30
) -> FastAPI:
    """The app around a loaded model; its lifespan starts the batch workers and warms the model up before the server
    listens, and /health answers 200 only after that."""
    batching = batching or Batching()
    metrics = ServeMetrics({"/predict", "/health", "/metadata", "/metrics"})
    batcher = Batcher(predictor.probabilities, batching, on_batch=metrics.batch_size.observe)
    # Decoding is CPU work: one thread per core keeps requests first in, first decoded.
    decoders = ThreadPoolExecutor(len(os.sched_getaffinity(0)), thread_name_prefix="mlproj-decode")
    lifecycle = Lifecycle()
    metrics.watch(queue_depth=batcher.waiting, in_flight=lambda: lifecycle.in_flight)
    max_bytes = int(max_upload_mb * MB)
    too_large = f"over the {max_upload_mb:g} MB upload limit (mlproj serve --max-upload-mb)"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        sizes = sorted({1, batching.max_batch_size})
        await asyncio.get_running_loop().run_in_executor(decoders, predictor.warm_up, sizes)
        # What is alive now (torch, timm, the model) lives as long as the server: frozen out of the collector's sight,
        # a full collection takes a few ms instead of ~300 ms that stall the forward passes (measured: the p99).
        gc.collect()
        gc.freeze()
        lifecycle.ready = True
        try:
            yield
        finally:
            batcher.stop()
            decoders.shutdown()

    app = FastAPI(title="mlproj", summary="Top-k image classification with an mlproj model", lifespan=lifespan)
    app.state.lifecycle = lifecycle

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Response:
        """Counts and times every request; refuses it while warming up or stopping, or when the body it announces
        is over the limit (before reading it)."""
        start = time.perf_counter()
        length = request.headers.get("content-length", "")
        refusal = lifecycle.refusal(request.url.path)
        if refusal:
            response: Response = JSONResponse({"detail": refusal}, 503)
        elif length.isdigit() and int(length) > max_bytes:
            response = JSONResponse({"detail": f"request of {int(length)} bytes is {too_large}"}, 413)
        else:
            lifecycle.in_flight += 1
            try:
                response = await call_next(request)
            finally:
                lifecycle.in_flight -= 1
        metrics.observe(request.url.path, response.status_code, time.perf_counter() - start)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_validation(error)}, 422)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metadata")
    def metadata() -> dict[str, Any]:
        card = predictor.card
        keys = ("backbone", "classes", "data_version", "git_commit", "format", "quantization", "source")
        served = {"temperature": predictor.trained.temperature, "tta": predictor.tta}
        return {**{key: getattr(card, key) for key in keys}, "preprocessing": card.preprocessing, **served}

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    def crops_of(uploads: list[UploadFile]) -> torch.Tensor:
        """The uploads decoded and cropped (in a decoder thread); one bad file refuses the request, naming it."""
        images = []
        for upload in uploads:
            if upload.size is not None and upload.size > max_bytes:  # a chunked body has no length to check up front
                raise HTTPException(413, f"{upload.filename}: {upload.size} bytes is {too_large}")
            try:
                images.append(decode_upload(upload.file.read()))
            except BadImageError as error:
                raise HTTPException(error.status, f"{upload.filename}: {error}") from error
        return predictor.crops(images)

    async def probabilities(uploads: list[UploadFile]) -> list[torch.Tensor]:
        """One row per upload, from the forward passes the batcher runs them in."""
        batcher.decoding += len(uploads)
        try:
            crops = await asyncio.get_running_loop().run_in_executor(decoders, crops_of, uploads)
        finally:
            batcher.decoding -= len(uploads)
        answers = batcher.submit(crops)
        try:
            return await asyncio.gather(*map(asyncio.wrap_future, answers))
        finally:
            for answer in answers:  # a request that timed out leaves the queue
                answer.cancel()

    @app.post("/predict")
    async def predict(file: list[UploadFile], top_k: int = Query(5, ge=1)) -> dict[str, Any]:
        """One answer per `file` field, in the order sent."""
        try:
            rows = await asyncio.wait_for(probabilities(file), timeout_s)
        except TimeoutError:
            raise HTTPException(
                503, f"not answered within {timeout_s:g} s (mlproj serve --timeout): the server is overloaded"
            ) from None
        answers = predictor.ranked(torch.stack(rows), top_k)
        for predictions in answers:
            metrics.predicted(predictions[0].label)
        return {
            "results": [
                {"file": upload.filename, "predictions": [asdict(p) for p in predictions]}
                for upload, predictions in zip(file, answers, strict=True)
            ]
        }

    return app
