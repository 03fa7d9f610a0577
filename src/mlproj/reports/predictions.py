"""Per-image test results, collected during the test pass itself: no second pass over the test data."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from mlproj.data.splits import relative_to
from mlproj.storage import write_csv


@dataclass(frozen=True)
class TestResult:
    """The top-k classes and probabilities of every tested image, in the test split's order, with its label."""

    labels: torch.Tensor  # (N,) int64
    top_classes: torch.Tensor  # (N, k) int64, most probable first
    top_probs: torch.Tensor  # (N, k) float32
    uncalibrated_confidence: torch.Tensor | None = None  # (N,) top-1 probability before temperature scaling
    single_view_predicted: torch.Tensor | None = None  # (N,) top-1 class without test-time augmentation

    @property
    def predicted(self) -> torch.Tensor:
        return self.top_classes[:, 0]

    @property
    def confidence(self) -> torch.Tensor:
        return self.top_probs[:, 0]

    @property
    def correct(self) -> torch.Tensor:
        """(N,) bool: top-1 right."""
        return self.predicted == self.labels

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def of(cls, batches: list[dict[str, torch.Tensor]]) -> "TestResult":
        """From each batch's fields (labels, top_classes, top_probs, and the optional ones), in order."""
        return cls(**{field: torch.cat([batch[field] for batch in batches]) for field in batches[0]})


class TestPredictions(L.Callback):
    """Keeps the top-k of each test batch from the logits `test_step` returns.

    Test loaders are sequential (EpochSampler without shuffling), so the n-th image seen is the split's n-th image;
    with `limit_test_batches` the result covers the first batches only, exactly what the metrics saw. With `served`
    (the hooks that add test-time augmentation and the temperature to the model's forward), also the top-1 class
    without augmentation and the confidence before scaling.
    """

    def __init__(self, top_k: int = 5, served: Any = None) -> None:
        self.top_k = top_k
        self.served = served
        self.batches: list[dict[str, torch.Tensor]] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.batches = []

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, **_: Any
    ) -> None:
        classes, probs = top_k(outputs.detach().float().softmax(dim=-1), self.top_k)
        fields = {"labels": batch[1].cpu(), "top_classes": classes, "top_probs": probs}
        if self.served is not None:
            fields["uncalibrated_confidence"] = self.served.uncalibrated.float().softmax(dim=-1).amax(dim=1).cpu()
        if self.served is not None and self.served.tta:
            fields["single_view_predicted"] = self.served.plain.argmax(dim=1).cpu()
        self.batches.append(fields)

    def result(self) -> TestResult:
        return TestResult.of(self.batches)


def top_k(probabilities: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(classes, probabilities) of the k most probable classes (at most all of them), on the CPU."""
    top_probs, top_classes = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
    return top_classes.cpu(), top_probs.cpu()


def prediction_rows(result: TestResult, classes: list[str], samples: Any, root: Path | None) -> tuple[list[str], Any]:
    """The header and rows of predictions.csv: one row per tested image (its path under the data root, or an id
    like `test/12` for in-memory data such as CIFAR), the actual class, the predicted one, and the top-k with
    probabilities.

    `prediction`, `probability` and `label{k}`/`prob{k}` are the columns predict.py writes, so one reader takes both.
    """
    k = result.top_classes.shape[1]
    header = ["path", "actual", "prediction", "probability"]
    header += [f"{kind}{rank}" for rank in range(1, k + 1) for kind in ("label", "prob")]
    file_root = root if samples.paths is not None else None

    def rows() -> Any:
        columns = zip(result.labels.tolist(), result.top_classes.tolist(), result.top_probs.tolist(), strict=True)
        for i, (label, top, probs) in enumerate(columns):
            ranked = [v for c, p in zip(top, probs, strict=True) for v in (classes[c], f"{p:.6f}")]
            yield [
                relative_to(samples.describe(i), file_root),
                classes[label],
                classes[top[0]],
                f"{probs[0]:.6f}",
                *ranked,
            ]

    return header, rows()


def write_predictions(path: Path, result: TestResult, classes: list[str], samples: Any, root: Path | None) -> None:
    """predictions.csv (see `prediction_rows`)."""
    write_csv(path, *prediction_rows(result, classes, samples, root))
