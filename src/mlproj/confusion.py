"""`python -m mlproj.confusion MANIFEST PREDICTIONS DATA_ROOT OUTPUT`: actual vs predicted class per test image.

DVC's `confusion` plot template draws a confusion matrix from rows of (actual, predicted); this joins the split a
run used (its manifest.csv) with predict.py's predictions.csv to write them. The test split is the one eval.py
scores: `test`, or `val` when the data has no test split.
"""

import csv
import sys
from pathlib import Path

from mlproj.data.splits import write_csv
from mlproj.errors import ConfigError


def read_rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror}): run the stage that writes it first") from error


def confusion_rows(manifest: Path, predictions: Path, data_root: Path) -> list[tuple[str, str, str]]:
    """(path, actual, predicted) for every image of the manifest's test split (val when there is no test)."""
    rows = read_rows(manifest)
    split = "test" if any(row["split"] == "test" for row in rows) else "val"
    predicted = {
        Path(row["path"]).absolute().relative_to(data_root.absolute()).as_posix(): row["prediction"]
        for row in read_rows(predictions)
    }
    missing = [row["path"] for row in rows if row["split"] == split and row["path"] not in predicted]
    if missing:
        raise ConfigError(
            f"{predictions} has no prediction for {missing[0]} ({len(missing)} missing): rerun predict.py"
        )
    return [(row["path"], row["label"], predicted[row["path"]]) for row in rows if row["split"] == split]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        sys.exit(__doc__.splitlines()[0])
    manifest, predictions, data_root, output = map(Path, args)
    try:
        rows = confusion_rows(manifest, predictions, data_root)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    write_csv(output, ["path", "actual", "predicted"], rows)


if __name__ == "__main__":
    main()
