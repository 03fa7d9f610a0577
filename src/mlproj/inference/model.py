"""Loading a trained model, the one way: a checkpoint (local or gs://) or a file `mlproj export` wrote.

Every consumer (eval, predict, export, serve, drift, the reports) gets from here the model, its class names and its
evaluation preprocessing, so none of them rebuilds a model, guesses class names or re-derives a transform itself.
"""

from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mlproj.errors import ConfigError
from mlproj.inference.card import ModelCard, card_of_checkpoint, read_card
from mlproj.inference.runtimes import Logits, format_of, load_logits

if TYPE_CHECKING:
    import torch

    from mlproj.data.transforms import EvalPreprocessing
    from mlproj.inference.served import ServedForward
    from mlproj.models.classifier import ImageClassifier

METADATA_KEY = "mlproj"  # where mlproj.callbacks.checkpoint_metadata puts the run's metadata in a checkpoint


@dataclass(frozen=True)
class TrainedModel:
    path: str
    classes: list[str]
    preprocessing: dict[str, Any]  # timm's data config, as training decided it
    card: ModelCard
    logits: Logits  # normalised float batch -> logits, in the file's own runtime (PyTorch, TorchScript, ONNX)
    module: "ImageClassifier | None" = None  # checkpoints only: the Lightning module, in eval mode
    checkpoint: dict[str, Any] | None = None  # checkpoints only: hyperparameters and the run's metadata

    @property
    def temperature(self) -> float:
        """What logits are divided by before the softmax: fitted on the validation split, 1.0 when never calibrated."""
        return self.card.temperature

    def probabilities(self, images: "torch.Tensor", tta: str | None = None) -> "torch.Tensor":
        """(N, classes) probabilities of a normalised float batch, as served: the views of `tta` (None, "flip",
        "flip_shift") in one call to the model, their logits averaged, then calibrated by the temperature."""
        from mlproj.inference.served import served_logits

        return served_logits(self.logits, images, self.temperature, tta).softmax(dim=-1)

    def serving(self, tta: str | None = None) -> "AbstractContextManager[ServedForward]":
        """The same answers from `module`'s forward, for the passes Lightning runs (a checkpoint's only)."""
        from mlproj.inference.served import ServedForward

        if self.module is None:
            raise TypeError(f"{self.path} is an exported model: use probabilities()")
        return ServedForward(self.temperature, tta).attached(self.module)

    @cached_property
    def preprocess(self) -> "EvalPreprocessing":
        from mlproj.data.transforms import EvalPreprocessing

        return EvalPreprocessing(self.preprocessing)

    def check_classes(self, data_classes: list[str]) -> None:
        """The data has the classes, in the order, the checkpoint was trained on (a checkpoint without class names
        fits any data), or one ConfigError saying so."""
        from mlproj.checkpoints import check_classes_match

        named = list(self.module.hparams.class_names or []) if self.module is not None else self.classes
        check_classes_match(named, data_classes, self.path)

    @property
    def trained_on(self) -> dict[str, Any] | None:
        """The data config the checkpoint was trained with (its test split is what eval and export use)."""
        return ((self.checkpoint or {}).get(METADATA_KEY) or {}).get("data")


def load_model(path: str, key: str = "ckpt_path", exported: bool = True) -> TrainedModel:
    """The model at `path`; `exported=False` refuses TorchScript/ONNX files (eval and predict need the checkpoint).

    A wrong path, a foreign or outdated file is one ConfigError naming `key`.
    """
    kind = format_of(path)
    if kind != "checkpoint":
        if not exported:
            raise ConfigError(f"{key}={path} is an exported {kind} model: give the .ckpt it was exported from")
        card = read_card(path)
        return TrainedModel(path, list(card.classes), dict(card.preprocessing), card, load_logits(path))

    from mlproj.checkpoints import checkpoint_classes, load_checkpoint

    checkpoint = load_checkpoint(path)
    classes = checkpoint_classes(checkpoint, path)  # also: an mlproj checkpoint of this version, or one line
    classes = classes or [str(i) for i in range(checkpoint["hyper_parameters"]["num_classes"])]
    preprocessing = (checkpoint.get(METADATA_KEY) or {}).get("preprocessing")
    if not preprocessing:
        raise ConfigError(
            f"{key}={path} records no preprocessing: it was not written by `python train.py` of this mlproj version"
        )
    module = module_from_checkpoint(checkpoint, path).eval()

    def run_checkpoint(images: Any) -> Any:
        import torch

        with torch.inference_mode():
            return module(images)

    card = card_of_checkpoint(checkpoint, path, classes, preprocessing)
    return TrainedModel(path, classes, dict(preprocessing), card, run_checkpoint, module, checkpoint)


def module_from_checkpoint(checkpoint: dict[str, Any], path: str) -> "ImageClassifier":
    """The ImageClassifier the checkpoint's hyperparameters describe, with its weights; never touches the hub."""
    from mlproj.checkpoints import check_state_keys
    from mlproj.models.classifier import ImageClassifier

    hparams = {**checkpoint["hyper_parameters"], "pretrained": False, "pretrained_file": None}
    model = ImageClassifier(**hparams)
    check_state_keys(model.state_dict(), checkpoint, path)
    model.load_state_dict(checkpoint["state_dict"])
    return model
