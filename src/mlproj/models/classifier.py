"""ImageClassifier: a timm backbone with the losses, metrics and schedules of image classification.

It knows nothing of files, buckets or preprocessing: batches arrive normalised (the DataModule's device-side
transforms), checkpoints through Lightning.
"""

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn as nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from mlproj.models.backbone import create_backbone
from mlproj.models.finetune import apply_finetune
from mlproj.models.optim import build_optimizer, build_scheduler, fast_forward, planned_steps

DEFAULT_OPTIMIZER = {"opt": "adamw", "lr": 1e-3, "weight_decay": 0.05}


def accuracy_metrics(num_classes: int, stage: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "acc_top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        },
        prefix=f"{stage}/",
    )


class ImageClassifier(L.LightningModule):
    def __init__(
        self,
        backbone: str,
        num_classes: int,
        class_names: list[str] | None = None,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        finetune: str = "full",
        freeze_stages: int = 0,
        unfreeze_at_epoch: int | None = None,
        label_smoothing: float = 0.0,
        mixup: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        extra = {"drop_path_rate": drop_path_rate} if drop_path_rate is not None else {}
        self.backbone = create_backbone(
            backbone, num_classes, pretrained, pretrained_file, drop_rate=drop_rate, **extra
        )
        self.optimizer_settings = dict(optimizer or DEFAULT_OPTIMIZER)
        self.lr = float(self.optimizer_settings["lr"])  # the attribute Lightning's LR finder sets
        self.frozen_norms = apply_finetune(self.backbone, finetune, freeze_stages)
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)

        self.mixup = self.build_mixup(dict(mixup or {}), num_classes, label_smoothing)
        if self.mixup is not None:
            from timm.loss import SoftTargetCrossEntropy

            self.train_criterion: nn.Module = SoftTargetCrossEntropy()
        else:
            self.train_criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.eval_criterion = nn.CrossEntropyLoss()
        self.train_metrics = accuracy_metrics(num_classes, "train")
        self.val_metrics = accuracy_metrics(num_classes, "val")
        self.test_metrics = accuracy_metrics(num_classes, "test")
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        # Saved with the weights: a run resumed mid-epoch reports the epoch's metrics over all its batches.
        self.train_loss.persistent(True)
        self.train_metrics.persistent(True)
        # A buffer, so the best value so far survives a resume with the rest of the state.
        self.register_buffer("val_acc_best", torch.tensor(0.0))

    @staticmethod
    def build_mixup(settings: dict[str, Any], num_classes: int, label_smoothing: float) -> Any:
        """timm's Mixup/CutMix when either alpha is set; model.mixup keys are its own argument names."""
        if not (settings.get("mixup_alpha", 0) > 0 or settings.get("cutmix_alpha", 0) > 0):
            return None
        from timm.data import Mixup

        return Mixup(**settings, label_smoothing=label_smoothing, num_classes=num_classes)

    def setup(self, stage: str) -> None:
        if self.hparams.compile:
            self.backbone.compile()

    def train(self, mode: bool = True) -> "ImageClassifier":
        """Frozen layers keep their BatchNorm statistics: Lightning switches to train mode every epoch."""
        super().train(mode)
        for norm in self.frozen_norms:
            norm.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.backbone(images)

    def on_train_epoch_start(self) -> None:
        epoch = self.hparams.unfreeze_at_epoch
        still_frozen = any(not p.requires_grad for p in self.backbone.parameters())
        if epoch is not None and self.current_epoch >= epoch and still_frozen:
            self.backbone.requires_grad_(True)
            self.frozen_norms = []
            self.train()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Mixup/cutmix mix the (already normalised, on-device) batch into soft targets; accuracy is counted against
        the labels."""
        images, labels = batch
        targets = labels
        if self.mixup is not None:
            images, targets = self.mixup(images, labels)
        logits = self(images)
        loss = self.train_criterion(logits, targets)
        self.train_loss.update(loss.detach(), weight=len(labels))
        self.train_metrics.update(logits.detach(), labels)
        return loss

    def on_train_epoch_end(self) -> None:
        """Logged once per epoch rather than per step: a log call costs more than the metric update."""
        self.log("train/loss", self.train_loss, prog_bar=True)
        self.log_dict(self.train_metrics)

    def _evaluate(
        self, batch: tuple[torch.Tensor, torch.Tensor], loss_metric: MeanMetric, metrics: MetricCollection, stage: str
    ) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss_metric.update(self.eval_criterion(logits, labels), weight=len(labels))
        metrics.update(logits, labels)
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return logits

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_acc_best.fill_(max(self.val_acc_best.item(), self.val_metrics["acc"].compute().item()))
        self.log("val/acc_best", self.val_acc_best, prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """The logits go to callbacks (mlproj.reports.predictions.TestPredictions keeps per-image results)."""
        return self._evaluate(batch, self.test_loss, self.test_metrics, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images).float().softmax(dim=-1)

    def planned_updates(self) -> int | None:
        """Optimizer updates in the whole run; None when it has no planned end (trainer.max_epochs=-1)."""
        total = self.trainer.estimated_stepping_batches
        return None if math.isinf(total) else int(total)

    def build_schedule(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        batches = self.trainer.num_training_batches  # set up by estimated_stepping_batches
        per_epoch = 1 if math.isinf(batches) else math.ceil(batches / self.trainer.accumulate_grad_batches)
        return build_scheduler(
            optimizer,
            self.lr,
            dict(self.hparams.scheduler or {"name": "none"}),
            total_steps=self.planned_updates(),
            steps_per_epoch=per_epoch,
        )

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.backbone, self.lr, self.optimizer_settings)
        schedule = self.build_schedule(optimizer)
        return optimizer if schedule is None else {"optimizer": optimizer, "lr_scheduler": schedule}

    def on_train_start(self) -> None:
        """A run resumed with a new length (more epochs) continues on the schedule planned for that length.

        The restored scheduler state would otherwise end the old plan early (one-cycle raises past its end).
        """
        for config in self.trainer.lr_scheduler_configs:
            restored = planned_steps(config.scheduler)
            if restored is None or restored == self.planned_updates():
                continue
            fresh = self.build_schedule(config.scheduler.optimizer)
            fast_forward(fresh["scheduler"], self.global_step)
            config.scheduler = fresh["scheduler"]

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """timm schedulers count updates themselves; torch ones step once per call."""
        from timm.scheduler.scheduler import Scheduler

        if isinstance(scheduler, Scheduler):
            scheduler.step_update(num_updates=self.global_step)
        else:
            scheduler.step()
