"""Train and eval transforms from a model's timm data config; every image leaves as 3-channel RGB."""

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

if TYPE_CHECKING:
    from mlproj.data.batch_transforms import BatchTransform


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
DEVICE_ONLY = ("hflip", "vflip", "re_prob")  # always done on the device, on whole batches
OURS = ("crop", "padding")  # how to crop: timm's random resized crop, or a padded crop at the model's size


def needs_pil(augment: Mapping[str, Any] | None) -> bool:
    return bool(augment) and any(augment.get(key) for key in PIL_ONLY)


def build_transform(data_config: Mapping[str, Any], augment: Mapping[str, Any] | None = None) -> Callable:
    """The loader's per-image part of timm's transform for `data_config`: PIL in, uint8 CHW tensor out.

    Training (given `augment`) crops each image and applies the PIL-only augmentations; evaluation resizes and
    centre-crops. Flips, normalisation and random erasing are left to the device (`build_batch_transform`).
    """
    from timm.data import create_transform
    from torchvision.transforms import CenterCrop, Compose, Lambda, RandomCrop, Resize

    base = {k: data_config[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")}
    if augment is None:
        return Compose([Lambda(to_rgb), create_transform(**base, is_training=False, use_prefetcher=True)])
    options = {k: v for k, v in augment.items() if k not in OURS and k not in DEVICE_ONLY}
    for key in ("scale", "ratio"):
        if options.get(key) is not None:
            options[key] = tuple(options[key])
    options["color_jitter"] = options.get("color_jitter") or 0.0
    primary, secondary, final = create_transform(
        **base, is_training=True, use_prefetcher=True, separate=True, hflip=0.0, vflip=0.0, re_prob=0.0, **options
    )
    if augment.get("crop") == "pad":
        size = int(data_config["input_size"][-1])
        primary = Compose([Resize(size), CenterCrop(size), RandomCrop(size, padding=int(augment.get("padding", 4)))])
    use_safe_posterize(secondary)
    return Compose([Lambda(to_rgb), primary, secondary, final])


def build_batch_transform(
    data_config: Mapping[str, Any], augment: Mapping[str, Any] | None, crop_here: bool
) -> "BatchTransform":
    """The device's part: the crop too when `crop_here` (the loader sent whole images), then flips, normalisation
    and random erasing. Without `augment`, the evaluation transform."""
    from mlproj.data.batch_transforms import BatchTransform, eval_scale_size

    size = int(data_config["input_size"][-1])
    common = {
        "mean": data_config["mean"],
        "std": data_config["std"],
        "size": size,
        "interpolation": data_config["interpolation"],
    }
    if augment is None:
        scale_size = eval_scale_size(size, data_config.get("crop_pct"))
        return BatchTransform(**common, crop="center" if crop_here else None, scale_size=scale_size)
    return BatchTransform(
        **common,
        crop=(augment.get("crop") or "random_resized") if crop_here else None,
        scale=augment.get("scale") or (0.08, 1.0),
        ratio=augment.get("ratio") or (3 / 4, 4 / 3),
        padding=int(augment.get("padding", 4)),
        hflip=float(augment.get("hflip", 0.5)),
        vflip=float(augment.get("vflip") or 0.0),
        re_prob=float(augment.get("re_prob") or 0.0),
    )
