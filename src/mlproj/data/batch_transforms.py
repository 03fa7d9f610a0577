"""Crops, flips and normalisation on uint8 images: per image in loader workers, per batch on the device.

Loaders send uint8 (a quarter of float32's bytes); the LightningModule runs `BatchTransform` in
`on_after_batch_transfer`, so the accelerator does the arithmetic. Every random choice is drawn per image with the
parameter functions of the CPU transforms they replace (timm's random-resized-crop box, torchvision's padded
crop), and the crop is one piece of code for both places, so a batch is distributed as if each image had been
transformed on its own.
"""

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CROPS = ("random_resized", "pad")


def resize_mode(interpolation: str) -> str:
    """timm's interpolation names in F.interpolate's terms ("random" and the rest train with bilinear)."""
    return "bicubic" if interpolation == "bicubic" else "bilinear"


def resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Antialiased like PIL's resize, so downscaling averages instead of skipping pixels."""
    if tuple(images.shape[-2:]) == size:
        return images
    resized = F.interpolate(images, size=size, mode=mode, antialias=True, align_corners=False)
    return resized.clamp_(0, 255) if mode == "bicubic" else resized


def center_crop(images: torch.Tensor, size: int, scale_size: int, mode: str) -> torch.Tensor:
    """timm's eval transform: short side to `scale_size`, then the central `size` x `size`."""
    height, width = images.shape[-2:]
    factor = scale_size / min(height, width)
    images = resize(images, (round(height * factor), round(width * factor)), mode)
    top, left = (images.shape[-2] - size) // 2, (images.shape[-1] - size) // 2
    return images[..., top : top + size, left : left + size]


def random_resized_crop(
    images: torch.Tensor, size: int, scale: Sequence[float], ratio: Sequence[float], mode: str
) -> torch.Tensor:
    """One box per image, drawn like timm's RandomResizedCropAndInterpolation, each resized to `size`."""
    from timm.data.transforms import RandomResizedCropAndInterpolation

    crops = []
    for image in images:
        top, left, height, width = RandomResizedCropAndInterpolation.get_params(image, tuple(scale), tuple(ratio))
        crops.append(resize(image[None, :, top : top + height, left : left + width], (size, size), mode))
    return crops[0] if len(crops) == 1 else torch.cat(crops)


def padded_random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding) per image, as one gather: zero-pad, then an offset per image."""
    n, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    padded_width = width + 2 * padding
    offsets = torch.randint(0, 2 * padding + 1, (2, n, 1, 1), device=images.device)
    rows = torch.arange(height, device=images.device).view(1, height, 1) + offsets[0]
    cols = torch.arange(width, device=images.device).view(1, 1, width) + offsets[1]
    index = (rows * padded_width + cols).view(n, 1, height * width).expand(n, channels, height * width)
    return padded.flatten(2).gather(2, index).view(n, channels, height, width)


def random_flip(images: torch.Tensor, p: float, dim: int) -> torch.Tensor:
    """Each image flipped with probability `p`; only the chosen ones are copied."""
    if p <= 0:
        return images
    chosen = (torch.rand(len(images), device=images.device) < p).nonzero().squeeze(1)
    images[chosen] = images[chosen].flip(dim)
    return images


class Crop(nn.Module):
    """The geometric part of a transform, on (N, C, H, W) batches of any dtype, one random draw per image.

    kind: "random_resized" (timm's scale and ratio), "pad" (zero padding, then a random crop at `size`; images of
    another size are centre-cropped to it first) or "center" (short side to `scale_size`, central square).
    Loader workers run it on one image at a time in uint8, the device on whole batches in float: the same code.
    """

    def __init__(
        self,
        kind: str,
        size: int,
        scale_size: int | None = None,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        padding: int = 4,
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        if kind not in (*CROPS, "center"):
            raise ValueError(f"unknown crop {kind!r}: one of {', '.join((*CROPS, 'center'))}")
        self.kind = kind
        self.size = int(size)
        self.scale_size = int(scale_size or size)
        self.scale, self.ratio, self.padding = tuple(scale), tuple(ratio), int(padding)
        self.mode = resize_mode(interpolation)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "random_resized":
            return random_resized_crop(images, self.size, self.scale, self.ratio, self.mode)
        if self.kind == "center":
            return center_crop(images, self.size, self.scale_size, self.mode)
        if tuple(images.shape[-2:]) != (self.size, self.size):
            images = center_crop(images, self.size, self.size, self.mode)
        return padded_random_crop(images, self.padding)


class BatchTransform(nn.Module):
    """uint8 (N, C, H, W) in, normalised channels-last float32 out: the crop when the loader sent whole images, then
    flips, normalisation and random erasing. Mean and std are buffers that are not saved, so checkpoints do not
    change."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop: Crop | None = None,
        hflip: float = 0.0,
        vflip: float = 0.0,
        re_prob: float = 0.0,
    ) -> None:
        super().__init__()
        self.crop = crop
        self.hflip, self.vflip = float(hflip), float(vflip)
        std_255 = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255
        mean_255 = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self.register_buffer("multiplier", 1 / std_255, persistent=False)
        self.register_buffer("offset", -mean_255 / std_255, persistent=False)
        self.erasing = None
        if re_prob > 0:
            from timm.data.random_erasing import RandomErasing

            self.erasing = RandomErasing(re_prob, mode="pixel", device="cpu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.crop is not None and self.crop.kind == "pad":
            images = self.crop(images)  # integer offsets: uint8 stays uint8, a quarter of the bytes to move
        images = images.to(torch.float32, copy=True)  # the in-place steps below never touch the caller's batch
        if self.crop is not None and self.crop.kind != "pad":
            images = self.crop(images)
        images = random_flip(random_flip(images, self.hflip, -1), self.vflip, -2)
        images = images.mul_(self.multiplier).add_(self.offset)
        if self.erasing is not None:
            self.erasing.device = images.device
            images = self.erasing(images)
        # Convolutions run faster channels-last (measured 5-7% for a resnet18 step on CPU; more on GPUs). The
        # arithmetic above stays in NCHW, where broadcasting over channels vectorises.
        return images.contiguous(memory_format=torch.channels_last)


class ImageTransform:
    """One image in a loader worker: HxWx3 uint8 array in, cropped uint8 (3, size, size) tensor out.

    `pil_augment` (timm's RandAugment, colour jitter, ...) runs on the crop, as in timm's own order.
    """

    def __init__(self, crop: Crop, pil_augment: Callable | None = None) -> None:
        self.crop = crop
        self.pil_augment = pil_augment

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        image = torch.from_numpy(pixels).permute(2, 0, 1)[None]  # a view: channels-last, which resizes fastest
        cropped = self.crop(image)[0]
        if self.pil_augment is None:
            return cropped.contiguous()
        from PIL import Image

        augmented = self.pil_augment(Image.fromarray(cropped.permute(1, 2, 0).numpy()))
        return torch.from_numpy(np.asarray(augmented, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()

    def __repr__(self) -> str:
        return f"ImageTransform(crop={self.crop.kind}, pil_augment={self.pil_augment!r})"


def eval_scale_size(size: int, crop_pct: float | None) -> int:
    """timm's eval resize: the short side before the central crop."""
    return math.floor(size / (crop_pct or 0.875))
