"""Test-time augmentation in the inference layer: flip-symmetric images get the answer they get without it, every
view goes to the model in one batch, and a module's forward hooks answer what TrainedModel.probabilities does."""

import pytest
import torch
from torch import nn

from mlproj.errors import ConfigError
from mlproj.inference.card import ModelCard
from mlproj.inference.model import TrainedModel
from mlproj.inference.served import ServedForward, served_logits
from mlproj.inference.tta import check_mode, views


def small_net() -> nn.Module:
    """A real convolutional classifier (random weights): nothing in it is symmetric."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2), nn.Flatten(), nn.LazyLinear(5)
    ).eval()


class Recording:
    """The model as a logits function that records the batch size of every call."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.calls: list[int] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(images))
        with torch.no_grad():
            return self.net(images)


def trained(logits: Recording, temperature: float = 1.0) -> TrainedModel:
    card = ModelCard(backbone="small", classes=list("abcde"), preprocessing={}, source="-", temperature=temperature)
    return TrainedModel("model.onnx", card.classes, {}, card, logits)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_flip_symmetric_images_get_the_same_answer_with_and_without_tta(images: torch.Tensor) -> None:
    model = trained(Recording(small_net()))
    symmetric = (images + images.flip(-1)) / 2
    plain = model.probabilities(symmetric)
    assert not plain.equal(model.probabilities(images))
    assert model.probabilities(symmetric, tta="flip") == pytest.approx(plain, abs=1e-6)
    flat = torch.ones_like(images) * torch.randn(4, 3, 1, 1)  # one colour per image: shifts change nothing either
    assert model.probabilities(flat, tta="flip_shift") == pytest.approx(model.probabilities(flat), abs=1e-6)


def test_tta_averages_the_logits_of_all_views_in_one_batched_call(images: torch.Tensor) -> None:
    logits = Recording(small_net())
    model = trained(logits, temperature=2.0)
    found = model.probabilities(images, tta="flip")
    expected = ((logits.net(images) + logits.net(images.flip(-1))) / 2 / 2.0).softmax(dim=1)
    assert found == pytest.approx(expected.detach(), abs=1e-6)
    logits.calls.clear()
    model.probabilities(images, tta="flip")
    model.probabilities(images, tta="flip_shift")
    assert logits.calls == [8, 24]  # 4 images x 2 views, 4 x 6: one call each
    shifted = views(images, "flip_shift")[8:12]
    assert shifted[..., 1:, 1:].equal(images[..., :-1, :-1])  # moved down-right, edges repeated, no wrap-around
    assert shifted[..., 0, 1:].equal(images[..., 0, :-1])


def test_forward_hooks_answer_what_probabilities_answers(images: torch.Tensor) -> None:
    net = small_net()
    served = ServedForward(temperature=1.5, tta="flip_shift")
    with served.attached(net), torch.no_grad():
        hooked = net(images)
    assert hooked == pytest.approx(served_logits(Recording(net), images, 1.5, "flip_shift"), abs=1e-6)
    with torch.no_grad():
        assert served.plain == pytest.approx(net(images), abs=1e-6)  # the images as given, before scaling
        assert net(images).shape == (4, 5)  # the hooks are gone after the block


def test_an_unknown_tta_mode_is_one_line() -> None:
    assert check_mode(None) is None and check_mode("flip") == "flip"
    with pytest.raises(ConfigError, match=r"^tta=mirror is not a test-time augmentation: use flip or flip_shift"):
        check_mode("mirror")
