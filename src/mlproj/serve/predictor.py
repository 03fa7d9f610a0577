"""The model side of serving: a checkpoint, TorchScript or ONNX model loaded once (mlproj.inference), and top-k
answers for uploads.

Preprocessing is evaluation's, from the model's own record (a checkpoint's, or the card beside an exported file):
the loader's per-image uint8 crop, then the device's normalisation, as `predict.py` and `eval.py` apply them.
Uploads are decoded by the same code that reads training and `predict.py` files.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from mlproj.inference.card import ModelCard
    from mlproj.inference.model import TrainedModel


class BadImageError(ValueError):
    """An upload that is not a usable image: the client's mistake, answered with a 4xx while the server carries on."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float


def decode_upload(data: bytes) -> np.ndarray:
    """HxWx3 uint8 RGB, upright, exactly as `predict.py` reads a file.

    The upload gets the check every training and prediction file passes (`mlproj.data.validate`: whole decode,
    truncation, decompression-bomb limit), and its pixels come from that same decode, converted as `Samples` converts
    a file's: decoding once keeps the decoder threads' CPU for forward passes.
    """
    from mlproj.data.transforms import to_rgb
    from mlproj.data.validate import decode_whole

    if not data:
        raise BadImageError("empty file (0 bytes)", 400)
    upright, error = decode_whole(data)
    if upright is None:
        raise BadImageError(error, 415)
    return np.array(to_rgb(upright))


class Predictor:
    """A loaded model with the evaluation preprocessing its checkpoint or card records.

    Split in two so serving can batch: `crops` is per request (decoded uploads cropped as the model sees them, in
    parallel in the decoder threads), `probabilities` is one forward pass over crops stacked from many requests.
    """

    def __init__(self, trained: "TrainedModel", tta: str | None = None) -> None:
        self.trained = trained
        self.card: ModelCard = trained.card
        self.tta = tta  # test-time augmentation (mlproj.inference.tta): its views run in the same forward pass

    @classmethod
    def load(cls, path: str, tta: str | None = None) -> "Predictor":
        """From a local path (a checkpoint also from a gs:// URL); a wrong path or foreign file is a ConfigError."""
        from mlproj.inference.model import load_model

        return cls(load_model(path, key="MODEL_PATH"), tta)

    def crops(self, images: Sequence[np.ndarray]) -> "torch.Tensor":
        """uint8 (N, 3, H, W): the loader's per-image crop of evaluation."""
        return self.trained.preprocess.crops(images)

    def probabilities(self, crops: "torch.Tensor") -> "torch.Tensor":
        """(N, classes) probabilities of `crops`, normalised as the device does, from one call to the model, as the
        inference layer serves them (its temperature applied)."""
        import torch

        trained = self.trained
        with torch.inference_mode():
            return trained.probabilities(trained.preprocess.batch_transform(crops), self.tta)

    def ranked(self, probabilities: "torch.Tensor", k: int) -> list[list[Prediction]]:
        """For each row, the `k` most probable classes (at most all of them), most probable first."""
        classes = self.trained.classes
        values, index = probabilities.topk(min(k, len(classes)), dim=1)
        return [
            [Prediction(classes[i], p) for i, p in zip(row_index, row_values, strict=True)]
            for row_index, row_values in zip(index.tolist(), values.tolist(), strict=True)
        ]

    def top_k(self, images: Sequence[np.ndarray], k: int) -> list[list[Prediction]]:
        """For each image, the `k` most probable classes, in one forward pass (the demo's path, unbatched)."""
        return self.ranked(self.probabilities(self.crops(images)), k)

    def warm_up(self, batch_sizes: Sequence[int]) -> None:
        """One forward pass at each batch size, so the first requests do not pay for the runtime's first-call setup
        (ONNX Runtime and PyTorch allocate and choose kernels per input shape on first use)."""
        import torch

        channels, height, width = self.trained.preprocessing["input_size"]
        for size in batch_sizes:
            self.probabilities(torch.zeros(size, channels, height, width, dtype=torch.uint8))
