"""Running exported model files: TorchScript (.pt) in PyTorch alone, ONNX (.onnx) in ONNX Runtime.

Both take the normalised float batch (N, 3, H, W) the backbone takes and give logits: preprocessing is described by
the model card, not baked into the graph.
"""

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from mlproj.errors import ConfigError

SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx"}

Logits = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def known_deprecations() -> Iterator[None]:
    """torch.jit and torch.ao.quantization warn at every call that they are deprecated; the docs say so once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor.* are deprecated")
        yield


def format_of(path: str) -> str:
    """The format a model file's suffix names: a checkpoint unless it is .pt (TorchScript) or .onnx."""
    suffix = Path(path).suffix.lower()
    return next((name for name, known in SUFFIXES.items() if known == suffix), "checkpoint")


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
