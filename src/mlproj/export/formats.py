"""Writing, quantizing and running the two export formats; serving and the export's own check run them alike.

TorchScript: `torch.jit.trace`, deprecated upstream (torch 2.14 warns) but still the one format that loads in
PyTorch alone, without the Python code. ONNX: torch's default (dynamo) exporter, which needs `onnxscript` and
works offline, with a dynamic batch axis. Both take the normalised float batch (N, 3, H, W) the backbone takes and
give logits: preprocessing is described by the model card, not baked into the graph.
"""

import copy
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from mlproj.errors import ConfigError

SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx"}
INPUT, OUTPUT = "images", "logits"

Logits = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def known_deprecations() -> Iterator[None]:
    """torch.jit and torch.ao.quantization warn at every call that they are deprecated; the README says so once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.* are deprecated")
        yield


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    """The ONNX exporter and ORT's quantizer log a line per node or tensor at INFO, which Hydra's logging shows."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)


def format_of(path: str) -> str:
    """The format a model file's suffix names: a checkpoint unless it is .pt (TorchScript) or .onnx."""
    suffix = Path(path).suffix.lower()
    return next((name for name, known in SUFFIXES.items() if known == suffix), "checkpoint")


def write_model(backbone: nn.Module, example: torch.Tensor, path: Path, format: str) -> None:
    """The backbone in eval mode, as `format`, at `path`; `example` is a real preprocessed batch of two or more."""
    backbone = backbone.eval()
    with torch.no_grad(), known_deprecations(), quiet_root_logger():
        if format == "torchscript":
            torch.jit.trace(backbone, example).save(str(path))
            return
        batch = torch.export.Dim("batch")
        torch.onnx.export(
            backbone,
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,  # one self-contained file (models under 2 GB), as serving loads it
            verbose=False,
        )


def write_quantized(backbone: nn.Module, example: torch.Tensor, float_path: Path, path: Path, format: str) -> None:
    """Dynamic int8 quantization of the Linear (and, for ONNX, MatMul/Gemm) weights, for CPU serving.

    Activations stay float and are quantized on the fly, so no calibration data is needed; convolutions are left
    as they are, which is why convnets gain little from it.
    """
    if format == "torchscript":
        with known_deprecations():
            quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(backbone).eval(), {nn.Linear}, torch.qint8)
        write_model(quantized, example, path, format)
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = path.with_name(f".{path.name}.prepared")
    try:
        with quiet_root_logger():
            quant_pre_process(str(float_path), str(prepared))  # shape inference and folding, as ORT recommends
            quantize_dynamic(str(prepared), str(path), weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)


def load_logits(path: str) -> Logits:
    """A function from a normalised float batch to logits, for a TorchScript (.pt) or ONNX (.onnx) file."""
    if not Path(path).is_file():
        raise ConfigError(f"{path} does not exist: give a model file written by `mlproj export` or a .ckpt")
    if format_of(path) == "torchscript":
        with known_deprecations():
            module = torch.jit.load(path, map_location="cpu").eval()

        def run_torchscript(images: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return module(images)

        return run_torchscript
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run_onnx(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: images.contiguous().numpy()})[0])

    return run_onnx
