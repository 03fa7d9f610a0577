"""gs:// paths through fsspec/gcsfs against the GCS emulator: what checkpoints and DVC remotes rely on."""

import json
from pathlib import Path

import fsspec
import pytest

from conftest import run_cli


def test_a_file_written_to_a_bucket_reads_back_byte_identical(gcs_emulator) -> None:
    bucket = gcs_emulator.bucket("roundtrip")
    payload = bytes(range(256)) * 1000
    with fsspec.open(f"{bucket}/dir/x.bin", "wb") as handle:
        handle.write(payload)
    with fsspec.open(f"{bucket}/dir/x.bin", "rb") as handle:
        assert handle.read() == payload
    fs, _ = fsspec.core.url_to_fs(bucket)
    assert fs.ls(f"{bucket}/dir", detail=False) == ["roundtrip/dir/x.bin"]


@pytest.mark.slow
def test_eval_and_predict_read_a_checkpoint_from_a_bucket(tmp_path: Path, digits_root: Path, gcs_emulator) -> None:
    quick = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false"]
    trained = run_cli("train", [f"data.root={digits_root}", f"hydra.run.dir={tmp_path / 'run'}", *quick], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    ckpt_url = f"{gcs_emulator.bucket('models')}/digits/best.ckpt"
    fsspec.filesystem("gs").put_file(str(tmp_path / "run" / "checkpoints" / "best.ckpt"), ckpt_url)

    evaluated = run_cli(
        "eval",
        [
            f"ckpt_path={ckpt_url}",
            "experiment=digits",
            f"data.root={digits_root}",
            f"hydra.run.dir={tmp_path / 'eval'}",
        ],
        tmp_path,
        env=gcs_emulator.env,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["ckpt_path"] == ckpt_url and 0.0 <= metrics["test/acc"] <= 1.0

    output = tmp_path / "predictions.csv"
    args = [f"ckpt_path={ckpt_url}", f"input={digits_root / '3'}", f"output={output}", "num_workers=0"]
    predicted = run_cli("predict", [*args, f"hydra.run.dir={tmp_path / 'predict'}"], tmp_path, env=gcs_emulator.env)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = output.read_text().splitlines()
    assert len(rows) == 1 + len(list((digits_root / "3").glob("*.png")))
