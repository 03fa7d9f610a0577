"""Train and eval transforms from a model's timm data config, split between loader workers and the device."""

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from mlproj.knobs import checked

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mlproj.data.batch_transforms import BatchTransform, Crop, ImageTransform


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette (with or without transparency), RGBA, CMYK and 16-bit images become RGB."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    return image.convert("RGB")


def posterize(image: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize, where keeping 0 bits gives a black image (as before Pillow 13) instead of a ValueError."""
    if bits_to_keep >= 8:
        return image
    if bits_to_keep < 1:
        return image.point(lambda _: 0)
    return ImageOps.posterize(image, bits_to_keep)


def use_safe_posterize(transform: Any) -> None:
    """Swap timm's posterize in the RandAugment, AugMix and AutoAugment ops found inside `transform`.

    RandAugment at magnitude 10 (e.g. `rand-m9-mstd0.5-inc1` when the noise reaches 10) asks for 0 bits,
    which Pillow 13 rejects: training would crash on a random batch.
    """
    from timm.data import auto_augment

    for child in getattr(transform, "transforms", []):
        use_safe_posterize(child)
    ops = list(getattr(transform, "ops", []))
    for sub_policy in getattr(transform, "policy", []):
        ops.extend(sub_policy)
    for op in ops:
        if getattr(op, "aug_fn", None) is auto_augment.posterize:
            op.aug_fn = posterize


PIL_ONLY = ("auto_augment", "color_jitter")  # augmentations that work on one PIL image at a time


def needs_pil(augment: Mapping[str, Any] | None) -> bool:
    return bool(augment) and any(augment.get(key) for key in PIL_ONLY)


def crop_for(data_config: Mapping[str, Any], augment: Mapping[str, Any] | None) -> "Crop":
    """The crop a model's timm data config asks for: a random one for training (given `augment`), else the centre."""
    from mlproj.data.batch_transforms import Crop, eval_scale_size

    size = int(data_config["input_size"][-1])
    if augment is not None:
        checked("data.augment.crop", augment.get("crop"))
    if augment is None:
        scale_size = eval_scale_size(size, data_config.get("crop_pct"))
        return Crop("center", size, scale_size=scale_size, interpolation=data_config["interpolation"])
    return Crop(
        augment.get("crop") or "random_resized",
        size,
        scale=augment.get("scale") or (0.08, 1.0),
        ratio=augment.get("ratio") or (3 / 4, 4 / 3),
        padding=int(augment.get("padding", 4)),
        interpolation=data_config["interpolation"],
    )


def build_transform(data_config: Mapping[str, Any], augment: Mapping[str, Any] | None = None) -> "ImageTransform":
    """The loader's per-image part: the crop, then the PIL-only augmentations (timm's), uint8 in and out.

    Flips, normalisation and random erasing are left to the device (`build_batch_transform`).
    """
    from mlproj.data.batch_transforms import ImageTransform

    pil_augment = None
    if needs_pil(augment):
        from timm.data import create_transform

        options = {k: augment.get(k) for k in PIL_ONLY}
        options["color_jitter"] = options["color_jitter"] or 0.0
        base = {k: data_config[k] for k in ("input_size", "interpolation", "mean", "std")}
        _, pil_augment, _ = create_transform(**base, is_training=True, use_prefetcher=True, separate=True, **options)
        use_safe_posterize(pil_augment)
    return ImageTransform(crop_for(data_config, augment), pil_augment)


def build_batch_transform(
    data_config: Mapping[str, Any], augment: Mapping[str, Any] | None, crop_here: bool
) -> "BatchTransform":
    """The device's part: the crop too when `crop_here` (the loader sent whole images), then flips, normalisation
    and random erasing. Without `augment`, the evaluation transform."""
    from mlproj.data.batch_transforms import BatchTransform

    crop = crop_for(data_config, augment) if crop_here else None
    augment = augment or {"hflip": 0.0}
    return BatchTransform(
        data_config["mean"],
        data_config["std"],
        crop=crop,
        hflip=float(augment.get("hflip", 0.5)),
        vflip=float(augment.get("vflip") or 0.0),
        re_prob=float(augment.get("re_prob") or 0.0),
    )


class EvalPreprocessing:
    """Evaluation's preprocessing outside a DataModule (serving, drift, Grad-CAM, export checks): HxWx3 uint8 images
    in, the per-image crop the loader makes (`crops`), then the normalisation the device applies (`__call__`)."""

    def __init__(self, data_config: Mapping[str, Any]) -> None:
        self.image_transform = build_transform(data_config)
        self.batch_transform = build_batch_transform(data_config, None, crop_here=False)

    def crops(self, images: "Sequence[np.ndarray]") -> "torch.Tensor":
        """uint8 (N, 3, H, W): each image cropped and resized as the model sees it."""
        import torch

        return torch.stack([self.image_transform(pixels) for pixels in images])

    def __call__(self, images: "Sequence[np.ndarray]") -> "torch.Tensor":
        import torch

        with torch.inference_mode():
            return self.batch_transform(self.crops(images))
