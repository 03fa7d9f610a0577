"""The ImageClassifier: fine-tuning policies, losses, schedules and the switches users flip."""

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mlproj.errors import ConfigError
from mlproj.models.classifier import ImageClassifier
from mlproj.models.optim import build_optimizer, build_scheduler, fast_forward, planned_steps


def classifier(**kwargs) -> ImageClassifier:
    return ImageClassifier(**{"backbone": "resnet18", "num_classes": 5, **kwargs})


def one_step(model: ImageClassifier, batch_size: int = 8) -> None:
    """A real optimizer step on random images, as Lightning would take it."""
    optimizer = build_optimizer(model.backbone, 0.1, {"opt": "sgd", "momentum": 0.9, "weight_decay": 0.0})
    model.train()
    images, labels = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 5, (batch_size,))
    loss = model.train_criterion(model(images), labels)
    loss.backward()
    optimizer.step()


def test_linear_probe_trains_only_the_classifier_and_keeps_batchnorm_statistics() -> None:
    model = classifier(finetune="linear_probe")
    trainable = {name for name, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    before = {k: v.clone() for k, v in model.backbone.state_dict().items() if not k.startswith("fc.")}
    one_step(model)
    after = model.backbone.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in before.items())
    assert all(not m.training for m in model.backbone.modules() if isinstance(m, _BatchNorm))


def test_freeze_stages_keeps_the_stem_and_first_stages_fixed() -> None:
    model = classifier(finetune="freeze_stages", freeze_stages=3)
    frozen = {name.split(".")[0] for name, p in model.backbone.named_parameters() if not p.requires_grad}
    trainable = {name.split(".")[0] for name, p in model.backbone.named_parameters() if p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1", "layer2", "layer3"}
    assert trainable == {"layer4", "fc"}
    model.train()
    assert not model.backbone.layer3[0].bn1.training and model.backbone.layer4[0].bn1.training


def test_freeze_stages_beyond_the_backbone_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model.freeze_stages=9 must be between 1 and 4"):
        classifier(finetune="freeze_stages", freeze_stages=9)


def test_unfreeze_at_epoch_thaws_everything_without_a_new_optimizer() -> None:
    model = classifier(finetune="linear_probe", unfreeze_at_epoch=2)
    optimizer = build_optimizer(model.backbone, 0.1, {"opt": "adamw", "weight_decay": 0.05})
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in model.backbone.parameters()}

    class Trainer:
        current_epoch = 2

    model._trainer = Trainer()  # what Lightning attaches during fit
    model.on_train_epoch_start()
    assert all(p.requires_grad for p in model.backbone.parameters())
    model.train()
    assert all(m.training for m in model.backbone.modules() if isinstance(m, _BatchNorm))


def test_norms_and_biases_get_no_weight_decay() -> None:
    model = classifier()
    optimizer = build_optimizer(model.backbone, 1e-3, {"opt": "adamw", "weight_decay": 0.05})
    decays = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decays[id(model.backbone.fc.bias)] == 0.0 and decays[id(model.backbone.bn1.weight)] == 0.0
    assert decays[id(model.backbone.conv1.weight)] == 0.05


def test_mixup_trains_on_soft_targets() -> None:
    model = classifier(mixup={"mixup_alpha": 0.8, "cutmix_alpha": 1.0}, label_smoothing=0.1)
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
    mixed, targets = model.mixup(images, labels)
    assert targets.shape == (8, 5) and torch.allclose(targets.sum(1), torch.ones(8))
    assert torch.isfinite(model.train_criterion(model(mixed), targets))


@pytest.mark.parametrize("name", ["cosine", "onecycle"])
def test_per_update_schedules_warm_up_peak_and_decay(name: str) -> None:
    model = classifier()
    optimizer = build_optimizer(model.backbone, 0.1, {"opt": "sgd", "momentum": 0.9})
    settings = {
        "name": name,
        "warmup_epochs": 1,
        "warmup_lr": 1e-4,
        "min_lr": 1e-5,
        "pct_start": 0.25,
        "div_factor": 25.0,
        "final_div_factor": 1e3,
    }
    schedule = build_scheduler(optimizer, 0.1, settings, total_steps=40, steps_per_epoch=10)
    assert schedule["interval"] == "step"
    lrs = []
    for step in range(1, 41):
        optimizer.step()
        fast_forward(schedule["scheduler"], step)
        lrs.append(optimizer.param_groups[0]["lr"])
    peak = max(range(40), key=lrs.__getitem__)
    assert 5 <= peak <= 15 and lrs[peak] == pytest.approx(0.1, rel=0.05)
    assert lrs[0] < lrs[peak] and lrs[-1] < 0.01
    assert planned_steps(schedule["scheduler"]) == 40


def test_preprocessing_is_the_backbones_at_the_datas_resolution_without_building_it() -> None:
    from timm import create_model
    from timm.data import resolve_model_data_config

    from mlproj.models.backbone import data_config_for

    config = data_config_for("resnet18", image_size=32, crop_pct=1.0)
    assert config["input_size"] == [3, 32, 32] and config["crop_pct"] == 1.0
    assert config["mean"] == pytest.approx([0.485, 0.456, 0.406])
    for name in ("resnet50.a1_in1k", "efficientnet_b0", "test_vit"):  # what timm resolves from a built model
        built = {
            k: list(v) if isinstance(v, tuple) else v for k, v in resolve_model_data_config(create_model(name)).items()
        }
        assert data_config_for(name) == built


def test_channels_last_switch_gives_the_same_answer() -> None:
    torch.manual_seed(0)
    plain = classifier().eval()
    fast = classifier(channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 32, 32)
    assert torch.allclose(plain(images), fast(images), atol=1e-5)
    assert fast.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_checkpoint_round_trip_never_touches_the_hub() -> None:
    from mlproj.inference.model import module_from_checkpoint

    model = classifier(class_names=list("abcde"))
    restored = module_from_checkpoint(
        {"hyper_parameters": {**model.hparams, "pretrained": True}, "state_dict": model.state_dict()}, "model.ckpt"
    )
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.eval()(images), restored.eval()(images))
    assert restored.hparams.class_names == list("abcde")
