"""`mlproj prepare data=NAME`: scan the raw data, check every file decodes, record manifest and rejects, and
build the decode-once pixel cache training reads."""

import logging
from pathlib import Path

from omegaconf import DictConfig, open_dict

from mlproj.build import build_datamodule
from mlproj.entry import hydra_entry

log = logging.getLogger(__name__)


def prepare(cfg: DictConfig) -> Path:
    """Validation is forced on: preparing is checking. Outputs go to the run dir (hydra.run.dir picks it)."""
    if "validate" in cfg.data:
        with open_dict(cfg):
            cfg.data.validate = True
    datamodule = build_datamodule(cfg.data, preprocessing=None)  # no model: nothing is fed to one
    run_dir = Path(cfg.paths.output_dir)
    datamodule.write_manifest(run_dir / "manifest.csv")
    sizes = ", ".join(f"{name} {count}" for name, count in datamodule.split_sizes().items())
    print(f"{datamodule.root}: {datamodule.num_classes} classes, {sizes}; {len(datamodule.rejected)} rejected")
    print(
        f"manifest: {run_dir / 'manifest.csv'}"
        + (f", rejected: {run_dir / 'rejected.csv'}" if datamodule.rejected else "")
    )
    if datamodule.pixel_cache is not None:
        print(f"pixel cache: {datamodule.pixel_cache}")
    if datamodule.checks_reused and datamodule.cache_reused:
        print("up to date")
    return run_dir


main = hydra_entry("prepare", prepare)

if __name__ == "__main__":
    main()
