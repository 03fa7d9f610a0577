"""Temperature scaling (Guo et al., 2017): one number T, fitted on the validation split, that divides the logits so
the probabilities say how often the model is right. It changes no prediction, only how sure each one is; it is
stored in the checkpoint's metadata and travels into exported models' cards (mlproj.inference.card).
"""

import logging
import math

import torch

log = logging.getLogger(__name__)

BOUNDS = (0.05, 20.0)  # temperatures searched; a network needing more is broken, not over-confident


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    return float(torch.nn.functional.cross_entropy(logits / temperature, labels))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T minimising the validation NLL of softmax(logits / T): a one-dimensional convex problem in log T, solved
    by scipy's bounded scalar minimiser."""
    from scipy.optimize import minimize_scalar

    logits, labels = logits.double(), labels.long()
    low, high = (math.log(bound) for bound in BOUNDS)
    found = minimize_scalar(lambda log_t: nll(logits, labels, math.exp(log_t)), bounds=(low, high), method="bounded")
    temperature = math.exp(found.x)
    if not BOUNDS[0] * 1.01 < temperature < BOUNDS[1] * 0.99:
        log.warning(
            "temperature %.3f is at the end of the range searched %s: the model is barely better than chance on"
            " these images; its probabilities cannot be made trustworthy by scaling",
            temperature,
            BOUNDS,
        )
    log.info(
        "temperature scaling on %d images: T = %.3f, NLL %.4f -> %.4f",
        len(labels),
        temperature,
        nll(logits, labels, 1.0),
        nll(logits, labels, temperature),
    )
    return temperature


def store_temperature(ckpt_path: str, temperature: float) -> None:
    """Write T into the checkpoint's mlproj metadata, atomically (local or gs://): the weights are untouched."""
    from mlproj.checkpoints import load_checkpoint
    from mlproj.inference.model import METADATA_KEY
    from mlproj.storage import atomic_write

    checkpoint = load_checkpoint(ckpt_path)
    checkpoint[METADATA_KEY] = {**(checkpoint.get(METADATA_KEY) or {}), "temperature": temperature}
    atomic_write(ckpt_path, lambda handle: torch.save(checkpoint, handle))
