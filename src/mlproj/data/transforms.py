"""Train and eval transforms from a model's timm data config; every image leaves as 3-channel RGB."""

from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image, ImageOps


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


def build_transform(data_config: Mapping[str, Any], augment: Mapping[str, Any] | None = None) -> Callable:
    """timm's transform for `data_config` (size, interpolation, mean, std, crop); a training one given `augment`."""
    from timm.data import create_transform
    from torchvision.transforms import Compose, Lambda

    base = {k: data_config[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")}
    if augment is None:
        transform = create_transform(**base, is_training=False)
    else:
        options = dict(augment)
        for key in ("scale", "ratio"):
            if options.get(key) is not None:
                options[key] = tuple(options[key])
        options["color_jitter"] = options.get("color_jitter") or 0.0
        transform = create_transform(**base, is_training=True, **options)
        use_safe_posterize(transform)
    return Compose([Lambda(to_rgb), transform])
