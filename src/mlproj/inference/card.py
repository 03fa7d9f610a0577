"""The model card: the JSON beside an exported model (`model.onnx.json` for `model.onnx`) that serving reads.

An exported file holds weights and a graph only; the class names, the evaluation preprocessing (timm's data config:
input size, mean, std, interpolation, crop), the calibration temperature and where the model came from travel beside
it, so a TorchScript or ONNX model is served exactly as its checkpoint is.
"""

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlproj.errors import ConfigError


@dataclass(frozen=True)
class ModelCard:
    backbone: str
    classes: list[str]
    preprocessing: dict[str, Any]  # timm's data config, as mlproj.build.resolve_preprocessing decided it for training
    source: str  # the checkpoint the model was trained into
    format: str = "checkpoint"  # checkpoint, torchscript or onnx
    quantization: str | None = None  # "dynamic-int8" when weights were quantized after training
    data_version: Any = None  # the run's data version (DVC hash and .dvc file), when the run recorded one
    git_commit: str | None = None
    mlproj_version: str | None = None
    check: dict[str, Any] = field(default_factory=dict)  # the export's own comparison with PyTorch
    temperature: float = 1.0  # logits are divided by it (temperature scaling on the validation split); 1.0: none

    def with_export(self, format: str, quantization: str | None = None) -> "ModelCard":
        return replace(self, format=format, quantization=quantization, check={})

    def with_check(self, check: dict[str, Any]) -> "ModelCard":
        return replace(self, check=check)

    def write(self, model_path: Path) -> Path:
        from mlproj.storage import write_json

        path = card_path(str(model_path))
        write_json(path, asdict(self))
        return Path(path)


def card_path(model_path: str) -> str:
    return f"{model_path}.json"


def read_card(model_path: str) -> ModelCard:
    """The card beside `model_path`; a missing or foreign one is a one-line ConfigError."""
    path = card_path(model_path)
    try:
        fields = json.loads(Path(path).read_text())
        return ModelCard(**fields)
    except FileNotFoundError as error:
        raise ConfigError(
            f"{model_path} has no {Path(path).name} beside it (classes and preprocessing): export it with"
            " `mlproj export`, which writes both"
        ) from error
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path} is not an mlproj model card ({error})") from error


def run_summary_of(ckpt_path: str) -> dict[str, Any]:
    """summary.json of the run that wrote the checkpoint: beside it (a checkpoint dir elsewhere keeps a copy) or in
    the run dir above `checkpoints/`; empty when neither exists (a checkpoint copied on its own)."""
    from mlproj.run_record import read_summary

    folder = ckpt_path.rsplit("/", 1)[0] if "/" in ckpt_path else "."
    for records in (folder, folder.rsplit("/", 1)[0] if "/" in folder else "."):
        summary = read_summary(records)
        if summary:
            return summary
    return {}


def card_of_checkpoint(checkpoint: dict[str, Any], ckpt_path: str, classes: list[str], data_config: dict) -> ModelCard:
    """What serving and export know about a checkpoint: its hyperparameters, metadata and its run's summary."""
    metadata = checkpoint.get("mlproj") or {}
    summary = run_summary_of(ckpt_path)
    return ModelCard(
        backbone=checkpoint["hyper_parameters"]["backbone"],
        classes=classes,
        preprocessing=dict(data_config),
        source=ckpt_path,
        data_version=metadata.get("data_version", summary.get("data_version")),
        git_commit=metadata.get("git_commit", summary.get("git_commit")),
        mlproj_version=metadata.get("version"),
        temperature=float(metadata.get("temperature", 1.0)),
    )
