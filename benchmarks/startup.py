"""Start-up cost of the entry points: `train.py --help` and `--cfg job` must answer in about a second.

Both only compose configs, so they must not import torch, Lightning, timm or wandb. For scale, the
same run also times `python -c "import torch, lightning"`, which is what a heavy import would add.
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 1.5


def wall_time(command: list[str], cwd: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    commands = {
        "help_s": [sys.executable, str(ROOT / "train.py"), "--help"],
        "cfg_job_s": [sys.executable, str(ROOT / "train.py"), "--cfg", "job"],
        "import_torch_lightning_s": [sys.executable, "-c", "import torch, lightning"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(args.repeats):  # interleaved, so machine noise hits every command alike
            for name, command in commands.items():
                times[name].append(wall_time(command, cwd))
    medians = {name: statistics.median(values) for name, values in times.items()}
    heavy = medians.pop("import_torch_lightning_s")
    print(f"median of {args.repeats} runs each; for scale, `import torch, lightning` takes {heavy:.2f} s")
    for name, value in medians.items():
        print(f"ratio {name} {value:.3f} (goal <= {GOAL_S}){'' if value <= GOAL_S else ' MISSED'}")


if __name__ == "__main__":
    main()
