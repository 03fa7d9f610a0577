"""Test-time augmentation: each image and its flipped (and shifted) copies go through the model as one batch, and
their logits are averaged, so the answer costs one call on the device however many views there are."""

import torch
import torch.nn.functional as F

from mlproj.errors import ConfigError

VIEWS = {"flip": 2, "flip_shift": 6}  # mode -> copies of each image the model sees
MODES = tuple(VIEWS)


def check_mode(tta: str | None, key: str = "tta") -> str | None:
    """`tta` as a mode (None: no augmentation), or one line naming the modes."""
    if tta is not None and tta not in MODES:
        raise ConfigError(f"{key}={tta} is not a test-time augmentation: use {' or '.join(MODES)}, or null for none")
    return tta


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The batch moved by (dy, dx) pixels, edges repeated (no wrap-around, no black border)."""
    pad = max(abs(dy), abs(dx))
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    height, width = images.shape[-2:]
    return padded[..., pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def views(images: torch.Tensor, tta: str | None) -> torch.Tensor:
    """(V * N, C, H, W): the N images first, then each augmented copy of all of them. `flip`: the mirror image
    (V = 2); `flip_shift`: both, each also moved 1/32 of the side down-right and up-left (V = 6)."""
    if tta is None:
        return images
    both = [images, images.flip(-1)]
    if tta == "flip_shift":
        step = max(1, images.shape[-1] // 32)
        both += [shifted(view, d, d) for d in (step, -step) for view in both]
    return torch.cat(both)


def merge(logits: torch.Tensor, tta: str | None) -> torch.Tensor:
    """(N, classes): the mean logits of each image's views."""
    if tta is None:
        return logits
    return logits.reshape(VIEWS[tta], -1, logits.shape[-1]).mean(dim=0)
