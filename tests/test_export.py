"""`mlproj export`: real exports of a trained checkpoint, run in ONNX Runtime and TorchScript next to PyTorch."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, compose, make_image_folder, requires_shared_data, train_tiny

MLPROJ = str(Path(sys.executable).parent / "mlproj")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, run_dir = train_tiny(tmp_path_factory.mktemp("export"), per_class=8)
    return run_dir / "checkpoints" / "last.ckpt"


def export(checkpoint: Path, output: Path, *overrides: str) -> Path:
    from mlproj.export.task import export as run_export

    return run_export(compose("export", [f"ckpt_path={checkpoint}", f"output_dir={output}", *overrides], output))


def pytorch_logits(checkpoint: Path, images: torch.Tensor) -> torch.Tensor:
    from mlproj.inference.model import load_model

    return load_model(str(checkpoint)).logits(images)


def test_onnx_has_a_dynamic_batch_axis_and_computes_what_pytorch_computes(checkpoint: Path, tmp_path: Path) -> None:
    import onnxruntime

    path = export(checkpoint, tmp_path / "out", "format=onnx")
    assert path == tmp_path / "out" / "model.onnx"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx", "model.onnx.json"]  # one file, no .data
    card = json.loads((tmp_path / "out" / "model.onnx.json").read_text())
    assert card["format"] == "onnx" and card["backbone"] == "resnet10t" and card["classes"] == ["cat", "dog", "fox"]
    assert {"input_size", "mean", "std", "interpolation", "crop_pct"} <= set(card["preprocessing"])
    assert card["check"]["ok"] and card["check"]["max_abs_logit_diff"] <= 1e-4
    assert card["check"]["on"] == "the test split of the checkpoint's data" and card["check"]["images"] > 0

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)  # symbolic: any batch size
    for batch in (1, 5):
        images = torch.randn(batch, 3, 32, 32)
        (logits,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
        assert logits.shape == (batch, 3)
        assert np.abs(logits - pytorch_logits(checkpoint, images).numpy()).max() <= 1e-4


def test_torchscript_loads_without_mlproj_and_computes_what_pytorch_computes(checkpoint: Path, tmp_path: Path) -> None:
    path = export(checkpoint, tmp_path / "out", "format=torchscript")
    assert path.name == "model.pt"
    card = json.loads(path.with_name("model.pt.json").read_text())
    assert card["format"] == "torchscript" and card["check"]["ok"]
    assert card["check"]["max_abs_logit_diff"] <= 1e-5
    images = torch.randn(3, 3, 32, 32)
    np.save(tmp_path / "images.npy", images.numpy())
    # A fresh interpreter that never imports mlproj or timm: the file alone is the model.
    script = (
        "import sys, numpy, torch; assert 'timm' not in sys.modules;"
        f"m = torch.jit.load({str(path)!r}); x = torch.from_numpy(numpy.load({str(tmp_path / 'images.npy')!r}));"
        f"numpy.save({str(tmp_path / 'logits.npy')!r}, m(x).detach().numpy()); assert 'mlproj' not in sys.modules"
    )
    subprocess.run([sys.executable, "-W", "ignore", "-c", script], check=True, timeout=120)
    assert np.abs(np.load(tmp_path / "logits.npy") - pytorch_logits(checkpoint, images).numpy()).max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_int8_reports_accuracy_and_speed_against_float32(checkpoint: Path, tmp_path: Path, fmt: str) -> None:
    """ONNX is quantized statically (calibrated on the check images, convolutions in int8), TorchScript dynamically."""
    from mlproj.inference.card import read_card
    from mlproj.serve.predictor import Predictor

    path = export(checkpoint, tmp_path / "out", f"format={fmt}", "quantize=true")
    int8 = path.with_name(f"model.int8{path.suffix}")
    card = read_card(str(int8))
    print(f"{fmt} int8: {card.check}")
    assert card.quantization == {"torchscript": "dynamic-int8", "onnx": "static-int8"}[fmt] and card.format == fmt
    assert card.check["images"] > 0
    for key in ("float32_accuracy", "int8_accuracy", "top1_agreement"):
        assert 0.0 <= card.check[key] <= 1.0
    assert card.check["float32_images_per_s"] > 0 and card.check["int8_images_per_s"] > 0
    assert Predictor.load(str(int8)).top_k([np.zeros((32, 32, 3), dtype=np.uint8)], 1)[0][0].label in card.classes


def test_the_check_runs_on_the_images_of_input(checkpoint: Path, tmp_path: Path) -> None:
    images = make_image_folder(tmp_path / "new", classes=("a",), per_class=5)
    path = export(checkpoint, tmp_path / "out", "format=torchscript", f"input={images}")
    check = json.loads(path.with_name("model.pt.json").read_text())["check"]
    assert check["on"] == f"input={images}" and check["images"] == 5 and check["ok"]


@requires_shared_data
def test_onnx_agrees_with_pytorch_on_real_photos(checkpoint: Path, tmp_path: Path) -> None:
    """Photos of many sizes (hymenoptera), resized and cropped by the evaluation preprocessing."""
    photos = SHARED_DATA / "hymenoptera" / "val" / "ants"
    path = export(checkpoint, tmp_path / "out", "format=onnx", f"input={photos}", "check_images=16")
    check = json.loads(path.with_name("model.onnx.json").read_text())["check"]
    print(f"ONNX Runtime vs PyTorch on 16 photos: max |logit difference| {check['max_abs_logit_diff']:.2e}")
    assert check["images"] == 16 and check["max_abs_logit_diff"] <= 1e-4


def test_an_unknown_format_is_one_line(checkpoint: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [MLPROJ, "export", f"ckpt_path={checkpoint}", "format=tflite", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: format=tflite is not one of onnx, torchscript: the export format"
    )


def test_an_earlier_export_is_kept_unless_overwrite_is_given(checkpoint: Path, tmp_path: Path) -> None:
    from mlproj.errors import ConfigError

    path = export(checkpoint, tmp_path / "out", "format=torchscript")
    first = path.read_bytes(), path.with_name("model.pt.json").read_text()
    with pytest.raises(ConfigError, match=r"already holds model.pt, model.pt.json .*overwrite=true") as raised:
        export(checkpoint, tmp_path / "out", "format=torchscript", "seed=1")
    assert str(raised.value).startswith(f"output_dir={tmp_path / 'out'} ")
    assert (path.read_bytes(), path.with_name("model.pt.json").read_text()) == first, "nothing written"
    export(checkpoint, tmp_path / "out", "format=onnx")  # another format's files stand beside it
    assert export(checkpoint, tmp_path / "out", "format=torchscript", "overwrite=true") == path
