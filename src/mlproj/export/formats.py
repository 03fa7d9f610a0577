"""Writing and quantizing the two export formats (mlproj.inference.runtimes runs them, for serving and for the
export's own check).

TorchScript: `torch.jit.trace`, deprecated upstream (torch 2.14 warns) but still the one format that loads in
PyTorch alone, without the Python code. ONNX: torch's default (dynamo) exporter, which needs `onnxscript` and
works offline, with a dynamic batch axis. Both take the normalised float batch (N, 3, H, W) the backbone takes and
give logits: preprocessing is described by the model card, not baked into the graph.
"""

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from mlproj.inference.runtimes import known_deprecations

INPUT, OUTPUT = "images", "logits"


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


def write_quantized(
    backbone: nn.Module,
    example: torch.Tensor,
    float_path: Path,
    path: Path,
    format: str,
    calibration: list[torch.Tensor],
) -> str:
    """An int8 copy for CPU serving; returns how it was quantized (the card's `quantization`).

    ONNX: static quantization with ONNX Runtime (QDQ, per-channel int8 weights, uint8 activations whose ranges are
    measured on `calibration`, real preprocessed images), so convolutions run in int8 too: resnet18 at 224 px went from
    15 to 4.5 ms per image on one core with AVX-512 VNNI. TorchScript: dynamic quantization of the Linear layers (no
    calibration; convolutions stay float, so convnets gain little).
    """
    if format == "torchscript":
        with known_deprecations():
            quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(backbone).eval(), {nn.Linear}, torch.qint8)
        write_model(quantized, example, path, format)
        return "dynamic-int8"
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT: batch.numpy()}

    prepared = path.with_name(f".{path.name}.prepared")
    try:
        with quiet_root_logger():
            quant_pre_process(str(float_path), str(prepared))  # shape inference and folding, as ORT recommends
            quantize_static(
                str(prepared),
                str(path),
                Batches(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
    finally:
        prepared.unlink(missing_ok=True)
    return "static-int8"
