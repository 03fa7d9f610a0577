"""The test stage of train.py and the whole of eval.py: one code path, so their numbers agree."""

import json
from pathlib import Path
from typing import Any


def run_test(trainer: Any, model: Any, datamodule: Any, ckpt_path: str | None) -> dict[str, float]:
    """Test `model` (or the weights at `ckpt_path`) on the data's test split (val when there is none)."""
    results = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    return {name: float(value) for name, value in (results[0] if results else {}).items()}


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
