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

    @property
    def predicted(self) -> torch.Tensor:
        return self.top_classes[:, 0]

    @property
    def confidence(self) -> torch.Tensor:
        return self.top_probs[:, 0]

    def __len__(self) -> int:
        return len(self.labels)


class TestPredictions(L.Callback):
    """Keeps the top-k of each test batch from the logits `test_step` returns.

    Test loaders are sequential (EpochSampler without shuffling), so the n-th image seen is the split's n-th image;
    with `limit_test_batches` the result covers the first batches only, exactly what the metrics saw.
    """

    def __init__(self, top_k: int = 5) -> None:
        self.top_k = top_k
        self.batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.batches = []

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, **_: Any
    ) -> None:
        probs = outputs.detach().float().softmax(dim=-1)
        top_probs, top_classes = probs.topk(min(self.top_k, probs.shape[1]), dim=1)
        self.batches.append((batch[1].cpu(), top_classes.cpu(), top_probs.cpu()))

    def result(self) -> TestResult:
        labels, classes, probs = (torch.cat(parts) for parts in zip(*self.batches, strict=True))
        return TestResult(labels=labels, top_classes=classes, top_probs=probs)


def write_predictions(path: Path, result: TestResult, classes: list[str], samples: Any, root: Path | None) -> None:
    """predictions.csv: one row per tested image (its path under the data root, or an id like `test/12` for
    in-memory data such as CIFAR), the actual class, the predicted one, and the top-k with probabilities.

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

    write_csv(path, header, rows())
