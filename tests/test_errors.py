"""Bad input fails before training with one line naming the value and the fix, and leaves nothing behind."""

import subprocess
import sys
from pathlib import Path

import pytest

from mlproj.cli import one_line_errors
from mlproj.errors import ConfigError

from conftest import compose, make_image_folder, run_cli

QUICK = ["debug=limit", "data.num_workers=0"]
MLPROJ = str(Path(sys.executable).with_name("mlproj"))  # the console script `pip install -e .` made


def folder_args(root: Path) -> list[str]:
    return ["data=imagefolder", f"data.root={root}", "model.backbone=resnet10t", "data.image_size=32", *QUICK]


@pytest.mark.parametrize(
    ("setup", "override", "expected"),
    [
        ("missing", None, "does not exist"),
        ("empty", None, "has 0 class folder(s) with images"),
        ("one_class", None, "has 1 class folder(s) with images (cat): a classifier needs at least 2"),
        ("ok", "data.val_fraction=1.5", "data.val_fraction=1.5 is not a number strictly between 0 and 1"),
        ("ok", "data.test_fraction=0", "data.test_fraction=0 is not a number strictly between 0 and 1"),
        ("ok", "model.backbone=resnet5O", "model.backbone=resnet5O is not a timm model: did you mean resnet50"),
        ("ok", "model.finetune=half", "model.finetune=half is not one of"),
    ],
)
def test_bad_input_is_one_line_naming_the_value(
    setup: str, override: str | None, expected: str, tmp_path: Path, train_in_process
) -> None:
    root = tmp_path / "pics"
    if setup == "empty":
        (root / "cats").mkdir(parents=True)
    elif setup == "one_class":
        make_image_folder(root, classes=("cat",), per_class=3)
        (root / "dog").mkdir()
    elif setup == "ok":
        make_image_folder(root, per_class=6)
    with pytest.raises(ConfigError) as error:
        train_in_process(*folder_args(root), *([override] if override else []))
    message = str(error.value)
    assert expected in message and "\n" not in message
    assert not (tmp_path / "logs" / "train" / "runs" / "run0" / "summary.json").exists()


def test_the_command_line_gets_exit_status_2_and_no_traceback(tmp_path: Path) -> None:
    result = run_cli("train", ["data=imagefolder", f"data.root={tmp_path / 'nowhere'}"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: data.root={tmp_path / 'nowhere'} does not exist: the folder of images: class folders, or train/ val/"
        " [test/] of class folders (`dvc pull` fetches the shipped ones)"
    ]
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs" / "train" / "runs").iterdir())


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["report", "{tmp}"], "RUN_DIR={tmp} is not a run dir"),
        (["drift", "--reference", "{tmp}/nowhere", "--images", "{tmp}"], "--reference {tmp}/nowhere"),
        (["report", "{tmp}/cut"], "{tmp}/cut/summary.json is not valid JSON"),
    ],
)
def test_a_command_with_its_own_flags_ends_the_same_way(args: list[str], named: str, tmp_path: Path) -> None:
    """Not only the Hydra tasks: `mlproj report`, `mlproj drift` and the rest end in one line and exit status 2."""
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "summary.json").write_text('{"status": "fini')  # a summary cut off mid-write
    command = [MLPROJ, *(arg.format(tmp=tmp_path) for arg in args)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and named.format(tmp=tmp_path) in line


def test_ctrl_c_is_one_word_and_exit_status_130_after_the_cleanup(capsys: pytest.CaptureFixture[str]) -> None:
    cleaned: list[str] = []
    with pytest.raises(SystemExit) as stopped, one_line_errors(cleanup=lambda: cleaned.append("run dir")):
        raise KeyboardInterrupt
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert cleaned == ["run dir"]


def interrupt(command: list[str], run_dir: Path, after: float | Path, cwd: Path) -> subprocess.CompletedProcess:
    """`command` sent SIGINT (what Ctrl+C sends) `after` seconds, or once the file `after` exists."""
    import signal
    import time

    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    if isinstance(after, Path):
        while not after.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        time.sleep(after)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.parametrize("when", ["importing", "importing torch", "setting up", "training"])
def test_ctrl_c_at_any_moment_of_a_run_is_one_line_and_130(when: str, tmp_path: Path, digits_root: Path) -> None:
    """Whenever it lands: one line, exit 130, no traceback; a run dir with only Hydra's files is removed, one that had
    started training keeps its checkpoint and says `interrupted`. (Each moment is a moment on this machine; the
    assertions hold wherever it lands.)"""
    from conftest import ROOT, read_summary

    run_dir = tmp_path / "run"
    args = [f"data.root={digits_root}", "data.num_workers=0", "test=false", f"hydra.run.dir={run_dir}"]
    after = {"importing": 0.05, "importing torch": 0.6, "setting up": 2.0}.get(
        when, run_dir / "checkpoints" / "last.ckpt"
    )
    result = interrupt([sys.executable, str(ROOT / "train.py"), *args], run_dir, after, tmp_path)
    assert result.returncode == 130, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == "interrupted" and "Traceback" not in result.stderr
    if run_dir.exists():
        assert read_summary(run_dir)["status"] == "interrupted", sorted(p.name for p in run_dir.iterdir())
    if when == "training":  # once the first checkpoint is written: stopped after a batch, saved again
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_a_config_error_wrapped_by_another_is_found_and_a_bug_keeps_its_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cleaned: list[str] = []
    with pytest.raises(SystemExit) as stopped, one_line_errors(cleanup=lambda: cleaned.append("run dir")):
        try:
            raise ConfigError("data.root=/nowhere does not exist")
        except ConfigError as error:
            raise RuntimeError("Error in call to target 'mlproj.data.ImageFolderDataModule'") from error
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "error: data.root=/nowhere does not exist\n"

    with pytest.raises(ValueError, match="a bug"), one_line_errors(cleanup=lambda: cleaned.append("again")):
        raise ValueError("a bug")
    with pytest.raises(SystemExit) as stopped, one_line_errors(cleanup=lambda: cleaned.append("again")):
        raise SystemExit(143)  # a stop signal's own status (mlproj.stop_signals) is kept
    assert stopped.value.code == 143
    assert cleaned == ["run dir"] and capsys.readouterr().err == ""


def test_a_checkpoint_of_other_classes_is_refused(tmp_path: Path, digits_root: Path, train_in_process) -> None:
    from mlproj.eval import evaluate

    _, run_dir = train_in_process(f"data.root={digits_root}", *QUICK, "trainer.max_epochs=1")
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    pictures = make_image_folder(tmp_path / "pics", per_class=6)
    with pytest.raises(ConfigError, match=r"was trained on 0, 1, 2, 3, 4, ... \(10 classes\) but the data has cat"):
        train_in_process(*folder_args(pictures), f"ckpt_path={checkpoint}")
    with pytest.raises(ConfigError, match="was trained on"):
        evaluate(compose("eval", [*folder_args(pictures)[:2], f"ckpt_path={checkpoint}"], tmp_path / "eval"))


def test_a_file_that_is_no_checkpoint_is_named(tmp_path: Path) -> None:
    from mlproj.eval import evaluate

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=f"ckpt_path={junk} is not a readable checkpoint"):
        evaluate(compose("eval", [f"ckpt_path={junk}"], tmp_path / "eval"))
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate(compose("eval", [f"ckpt_path={tmp_path / 'none.ckpt'}"], tmp_path / "eval"))


def test_pretrained_weights_offline_say_how_to_fix_it(tmp_path: Path, monkeypatch) -> None:
    from mlproj.models.backbone import create_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match=r"model.pretrained=true but the weights of resnet10t could not be fetched"):
        create_backbone("resnet10t", num_classes=3, pretrained=True)


def test_pretrained_weights_from_a_local_file(tmp_path: Path) -> None:
    import timm
    import torch

    from mlproj.models.backbone import create_backbone

    source = timm.create_model("resnet10t", num_classes=1000)
    weights = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), weights)
    model = create_backbone("resnet10t", num_classes=3, pretrained_file=str(weights))
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    assert model.get_classifier().out_features == 3


def test_pretrained_weights_from_a_url_go_through_fsspec(tmp_path: Path, monkeypatch) -> None:
    """gs:// takes this path too (with gcsfs); memory:// stands in for the bucket here."""
    import fsspec
    import timm
    import torch

    from mlproj.models.backbone import create_backbone

    monkeypatch.setenv("HOME", str(tmp_path))
    source = timm.create_model("resnet10t", num_classes=1000)
    with fsspec.open("memory://bucket/resnet10t.pth", "wb") as handle:
        torch.save(source.state_dict(), handle)
    model = create_backbone("resnet10t", num_classes=4, pretrained_file="memory://bucket/resnet10t.pth")
    assert torch.equal(model.conv1[0].weight, source.conv1[0].weight)
    with pytest.raises(ConfigError, match=r"model.pretrained_file=memory://bucket/missing.pth cannot be read"):
        create_backbone("resnet10t", num_classes=4, pretrained_file="memory://bucket/missing.pth")
