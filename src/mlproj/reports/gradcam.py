"""The most confidently misclassified test images, each beside a Grad-CAM overlay (the grad-cam package) of
where the model looked when it chose the wrong class."""

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlproj.reports.predictions import TestResult

log = logging.getLogger(__name__)

MAX_IMAGES = 16
PER_ROW = 4  # images per row
MIN_MAP_SIZE = 4  # a stage whose maps are smaller (1x1 for a ResNet's layer4 at 32 px) says nothing about where


def cam_layer(backbone: nn.Module, image_size: int) -> tuple[str, Callable[[torch.Tensor], torch.Tensor] | None] | None:
    """The module Grad-CAM reads, and how to turn its output into (B, C, H, W); None when there is none.

    CNNs: the last stage timm's `feature_info` names (`layer4` of a ResNet, `stages.3` of a ConvNeXt, the last
    block group of an EfficientNet), or the deepest one whose maps are at least MIN_MAP_SIZE wide at this image
    size (`layer2` of a ResNet at 32 px); stages that return channels-last maps (Swin) are permuted. ViTs have no
    convolutional stage: the last block's first norm is read instead, its patch tokens laid out on the patch grid
    (grad-cam's recipe: the last block's output reaches the classifier only through the class token).
    """
    grid = getattr(getattr(backbone, "patch_embed", None), "grid_size", None)
    blocks = getattr(backbone, "blocks", None)
    if grid is not None and blocks is not None and hasattr(blocks[-1], "norm1"):
        prefix = int(getattr(backbone, "num_prefix_tokens", 1))

        def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
            patches = tokens[:, prefix:, :]
            return patches.reshape(tokens.size(0), grid[0], grid[1], tokens.size(2)).permute(0, 3, 1, 2)

        return f"blocks.{len(blocks) - 1}.norm1", tokens_to_grid
    info = getattr(backbone, "feature_info", None)
    if not info:
        return None
    wide_enough = [stage for stage in info if image_size // stage["reduction"] >= MIN_MAP_SIZE]
    stage = (wide_enough or info[:1])[-1]

    def channels_first(maps: torch.Tensor) -> torch.Tensor:
        return maps if maps.shape[1] == stage["num_chs"] else maps.permute(0, 3, 1, 2)

    return stage["module"], channels_first


def most_confident_mistakes(result: TestResult, limit: int = MAX_IMAGES) -> list[int]:
    """Indices of the misclassified images, most confident first."""
    wrong = (result.predicted != result.labels).nonzero().flatten()
    return wrong[result.confidence[wrong].argsort(descending=True)][:limit].tolist()


def grad_cams(backbone: nn.Module, inputs: torch.Tensor, classes: list[int]) -> Any:
    """(N, H, W) maps in [0, 1] for `classes`, or None (with one line saying why) when the backbone has no layer."""
    found = cam_layer(backbone, inputs.shape[-1])
    if found is None:
        log.info("misclassified grid without Grad-CAM: %s has no stage to read", type(backbone).__name__)
        return None
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    name, reshape = found
    training = backbone.training
    backbone.eval()
    try:
        with torch.enable_grad(), GradCAM(backbone, [backbone.get_submodule(name)], reshape_transform=reshape) as cam:
            # The input asks for gradients, so frozen backbones (linear probes) still give the layer a gradient.
            inputs = inputs.float().requires_grad_(True)
            maps = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(c) for c in classes])
    finally:
        backbone.zero_grad(set_to_none=True)
        backbone.train(training)
    log.info("Grad-CAM of %s on the misclassified images", name)
    return maps


def short(name: str, width: int = 16) -> str:
    """A class name that fits above one panel."""
    return name if len(name) <= width else name[: width - 1] + "…"


def plot_misclassified(
    result: TestResult,
    class_names: list[str],
    samples: Any,
    backbone: nn.Module,
    preprocessing: dict[str, Any],
    path: Path,
) -> bool:
    """The grid, as the model saw each image (its evaluation crop of `preprocessing`, timm's data config); False when
    nothing was misclassified."""
    index = most_confident_mistakes(result)
    if not index:
        log.info("no misclassified test image: no misclassified grid")
        return False
    from matplotlib.figure import Figure
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from mlproj.data.transforms import EvalPreprocessing

    preprocess = EvalPreprocessing(preprocessing)
    crops = preprocess.crops([samples.array(i) for i in index])  # uint8 (N, 3, H, W)
    device = next(backbone.parameters()).device
    inputs = preprocess.batch_transform.to(device)(crops.to(device))
    predicted = result.predicted[index].tolist()
    maps = grad_cams(backbone, inputs, predicted)

    panels = 1 if maps is None else 2  # the image, and its overlay
    rows = math.ceil(len(index) / PER_ROW)
    columns = panels * min(len(index), PER_ROW)
    figure = Figure(figsize=(1.6 * columns, 2.1 * rows + 0.3), layout="constrained")
    pictures = crops.permute(0, 2, 3, 1).numpy()
    for n, i in enumerate(index):
        shown = [pictures[n]]
        if maps is not None:
            shown.append(show_cam_on_image(pictures[n] / 255.0, maps[n], use_rgb=True, image_weight=0.5))
        actual, wrong = (short(class_names[c]) for c in (int(result.labels[i]), predicted[n]))
        titles = [f"{actual}\n→ {wrong}", f"\np={result.confidence[i]:.2f}"]
        if maps is None:
            titles = [f"{actual}\n→ {wrong} ({result.confidence[i]:.2f})"]
        for k, (picture, title) in enumerate(zip(shown, titles, strict=True)):
            axes = figure.add_subplot(rows, columns, panels * n + k + 1)
            axes.imshow(picture, interpolation="nearest")
            axes.set_title(title, fontsize=9)
            axes.set_axis_off()
    overlay = "beside Grad-CAM of the predicted class" if maps is not None else "(no Grad-CAM for this backbone)"
    figure.suptitle(f"most confidently misclassified, actual → predicted, {overlay}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return True
