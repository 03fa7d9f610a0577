"""The model side of serving: a checkpoint, TorchScript or ONNX model loaded once, and top-k answers for uploads.

Preprocessing is evaluation's, rebuilt from the model's timm data config (a checkpoint's, or the card beside an
exported file): the loader's per-image uint8 crop, then the device's normalisation, the two pieces `predict.py`
and `eval.py` use. Uploads are decoded by the same code that reads training and `predict.py` files.
"""

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mlproj.export.card import ModelCard

if TYPE_CHECKING:
    import torch

    from mlproj.export.formats import Logits


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

    The upload goes through `mlproj.data.validate.check_image`, the check every training and prediction file
    passes (whole decode, truncation, decompression-bomb limit), and is then read by `Samples`, the reader of
    training and `predict.py`.
    """
    from mlproj.data.samples import Samples
    from mlproj.data.validate import check_image

    with tempfile.NamedTemporaryFile(prefix="mlproj-upload-") as handle:
        handle.write(data)
        handle.flush()
        check = check_image(handle.name)
        if check.error:
            raise BadImageError(check.error, 400 if check.size == 0 else 415)
        return Samples(labels=np.zeros(1, dtype=np.int64), paths=np.asarray([handle.name])).array(0)


class EvalPreprocessing:
    """HxWx3 uint8 images in, the normalised float batch evaluation feeds the model out."""

    def __init__(self, data_config: Mapping[str, Any]) -> None:
        from mlproj.data.transforms import build_batch_transform, build_transform

        self.image_transform = build_transform(data_config)
        self.batch_transform = build_batch_transform(data_config, None, crop_here=False)

    def __call__(self, images: Sequence[np.ndarray]) -> "torch.Tensor":
        import torch

        with torch.inference_mode():
            return self.batch_transform(torch.stack([self.image_transform(pixels) for pixels in images]))


def load_model(path: str) -> tuple["Logits", ModelCard]:
    """The logits function and card of a model file: .pt (TorchScript), .onnx, or else an mlproj checkpoint."""
    from mlproj.export.card import read_card
    from mlproj.export.formats import format_of, load_logits

    if format_of(path) != "checkpoint":
        card = read_card(path)
        return load_logits(path), card
    import torch

    from mlproj.checkpoints import checkpoint_classes, load_checkpoint
    from mlproj.export.card import card_of_checkpoint
    from mlproj.models.classifier import ImageClassifier

    checkpoint = load_checkpoint(path)
    classes = checkpoint_classes(checkpoint, path) or [
        str(i) for i in range(checkpoint["hyper_parameters"]["num_classes"])
    ]
    model = ImageClassifier.from_checkpoint(checkpoint, path).eval()

    def run_checkpoint(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(images)

    return run_checkpoint, card_of_checkpoint(checkpoint, path, classes, model.data_config)


class Predictor:
    """A loaded model with the evaluation preprocessing its checkpoint or card records."""

    def __init__(self, logits: "Logits", card: ModelCard) -> None:
        self.logits = logits
        self.card = card
        self.preprocess = EvalPreprocessing(card.preprocessing)

    @classmethod
    def load(cls, path: str) -> "Predictor":
        """From a local path (a checkpoint also from a gs:// URL); a wrong path or foreign file is a ConfigError."""
        return cls(*load_model(path))

    def top_k(self, images: Sequence[np.ndarray], k: int) -> list[list[Prediction]]:
        """For each image, the `k` most probable classes (at most all of them), most probable first."""
        probabilities = self.logits(self.preprocess(images)).float().softmax(dim=-1)
        values, index = probabilities.topk(min(k, len(self.card.classes)), dim=1)
        classes = self.card.classes
        return [
            [Prediction(classes[i], p) for i, p in zip(row_index, row_values, strict=True)]
            for row_index, row_values in zip(index.tolist(), values.tolist(), strict=True)
        ]
