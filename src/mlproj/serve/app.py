"""The HTTP routes around one loaded Predictor: /predict, /health, /metadata and /metrics.

Every client mistake (no image, a broken one, an empty or oversized upload, a wrong field) is a 4xx JSON answer
`{"detail": "..."}` naming the problem, and the server goes on answering.
"""

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from mlproj.serve.metrics import ServeMetrics
from mlproj.serve.predictor import BadImageError, decode_upload

if TYPE_CHECKING:
    from mlproj.serve.predictor import Predictor

MB = 2**20


def describe_validation(error: RequestValidationError) -> str:
    """FastAPI's list of problems as one line, with the way out when the image field is missing."""
    problems = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        hint = ": send each image as the multipart form field `file`" if problem["loc"][-1] == "file" else ""
        problems.append(f"{where}: {problem['msg']}{hint}")
    return "; ".join(problems)


def create_app(predictor: "Predictor", max_upload_mb: float = 10) -> FastAPI:
    """The app is built around a model that is already loaded, so a server that answers is ready to predict."""
    app = FastAPI(title="mlproj", summary="Top-k image classification with an mlproj model")
    metrics = ServeMetrics({"/predict", "/health", "/metadata", "/metrics"})
    max_bytes = int(max_upload_mb * MB)
    too_large = f"over the {max_upload_mb:g} MB upload limit (mlproj serve --max-upload-mb)"

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Response:
        """Counts and times every request; a body announced over the limit is refused before it is read."""
        start = time.perf_counter()
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_bytes:
            response: Response = JSONResponse({"detail": f"request of {int(length)} bytes is {too_large}"}, 413)
        else:
            response = await call_next(request)
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
        return {**{key: getattr(card, key) for key in keys}, "preprocessing": card.preprocessing}

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    # A plain `def`: FastAPI runs it in a worker thread, so inference never blocks the event loop.
    @app.post("/predict")
    def predict(file: list[UploadFile], top_k: int = Query(5, ge=1)) -> dict[str, Any]:
        """One answer per `file` field, in the order sent; one bad file refuses the request, naming that file."""
        images = []
        for upload in file:
            if upload.size is not None and upload.size > max_bytes:  # a chunked body has no length to check up front
                raise HTTPException(413, f"{upload.filename}: {upload.size} bytes is {too_large}")
            try:
                images.append(decode_upload(upload.file.read()))
            except BadImageError as error:
                raise HTTPException(error.status, f"{upload.filename}: {error}") from error
        answers = predictor.top_k(images, top_k)
        for predictions in answers:
            metrics.predicted(predictions[0].label)
        return {
            "results": [
                {"file": upload.filename, "predictions": [asdict(p) for p in predictions]}
                for upload, predictions in zip(file, answers, strict=True)
            ]
        }

    return app
