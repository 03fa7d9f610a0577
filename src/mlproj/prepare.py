"""`mlproj prepare data=NAME`: scan the raw data, check every file decodes, record manifest and rejects, and
build the decode-once pixel cache training reads; with `shards=URL`, write the checked data as shards instead of the
cache (mlproj.data.shard_writer), for `data.shards=URL` to stream."""

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from mlproj.build import build_datamodule
from mlproj.data_version import data_version
from mlproj.entry import hydra_entry

log = logging.getLogger(__name__)


def prepare(cfg: DictConfig) -> Path:
    """Validation is forced on: preparing is checking. Outputs go to the run dir (hydra.run.dir picks it)."""
    shards = cfg.get("shards")
    short_side = cfg.data.get("cache_short_side")
    with open_dict(cfg):
        if "validate" in cfg.data:
            cfg.data.validate = True
        if shards and short_side is not None:
            cfg.data.cache_short_side = None  # the shards hold the resized images: no pixel cache (330 GB for ImageNet)
        if shards and cfg.data.get("shards"):
            cfg.data.shards = None  # shards are written from the checked files, never from other shards
    if shards:
        from mlproj.data.shard_writer import check_writable

        check_writable(shards)  # before the checks, which take hours on ImageNet
    datamodule = build_datamodule(cfg.data, preprocessing=None)  # no model: nothing is fed to one
    run_dir = Path(cfg.paths.output_dir)
    datamodule.write_manifest(run_dir / "manifest.csv")
    sizes = ", ".join(f"{name} {count}" for name, count in datamodule.split_sizes().items())
    print(f"{datamodule.root}: {datamodule.num_classes} classes, {sizes}; {len(datamodule.rejected)} rejected")
    print(
        f"manifest: {run_dir / 'manifest.csv'}"
        + (f", rejected: {run_dir / 'rejected.csv'}" if datamodule.rejected else "")
    )
    if shards:
        print(write_shards(cfg, datamodule, shards, short_side))
    elif datamodule.pixel_cache is not None:
        print(f"pixel cache: {datamodule.pixel_cache}")
    if not shards and datamodule.checks_reused and datamodule.cache_reused:
        print("up to date")
    return run_dir


def write_shards(cfg: DictConfig, datamodule: Any, url: str, short_side: int | None) -> str:
    """Write (or find up to date) the shard set at `url`; return the line that says which."""
    from mlproj.data.shard_writer import write_shards as write

    done = write(
        datamodule,
        url,
        short_side=short_side,
        quality=cfg.data.get("shard_quality", 90),
        data_version=lambda: data_version(datamodule.root, Path(cfg.paths.cache_dir)),
        chunk_size=cfg.shards_chunk_size,
    )
    if not done.written:
        return f"shards: {done.url} up to date"
    sizes = ", ".join(f"{name} {count}" for name, count in done.index.splits.items())
    kept = f" (kept {', '.join(done.kept)} from an interrupted prepare)" if done.kept else ""
    return (
        f"shards: {done.url}: {sizes}; {done.stored_bytes / 1e6:.1f} MB, {done.ratio:.2f}x the original"
        f" {done.source_bytes / 1e6:.1f} MB{kept}"
    )


main = hydra_entry("prepare", prepare)

if __name__ == "__main__":
    main()
