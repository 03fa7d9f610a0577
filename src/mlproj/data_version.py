"""The data version a run records: DVC's hash of the data folder, and the `.dvc` file that tracks it, if any.

The hash is computed the way DVC 3 computes a folder's (`md5` of a sorted JSON list of each file's md5 and
relative path, plus `.dir`), so it equals the `md5:` in `data.dvc` exactly when the files a run read are the ones
DVC tracks, with or without DVC installed. Hashing reads every byte once per version of the file list (paths,
sizes, modification times); later runs on unchanged files read the answer from `cache_dir`.
"""

import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from mlproj.data.fingerprint import fingerprint
from mlproj.storage import write_text

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def folder_files(root: Path) -> list[Path]:
    """Every readable file under `root`, as DVC sees the folder (hidden files included, symlinks followed).

    Broken links, symlink loops and unreadable files are left out, as the image checks reject them: a run on such a
    folder still records a version (one DVC itself could not compute until the folder is cleaned).
    """
    found = (Path(folder) / name for folder, _, names in os.walk(root, followlinks=True) for name in names)
    return sorted(path for path in found if path.is_file() and os.access(path, os.R_OK))


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def dvc_folder_hash(root: Path, cache_dir: Path | None = None) -> str:
    """DVC 3's hash of the folder `root` (`<md5>.dir`), remembered in `cache_dir/versions/` per file-list version."""
    files = folder_files(root)
    record = cache_dir / "versions" / f"{fingerprint([str(f) for f in files])}.txt" if cache_dir else None
    if record is not None and record.is_file():
        return record.read_text().strip()
    entries = [{"md5": file_md5(path), "relpath": path.relative_to(root).as_posix()} for path in files]
    entries.sort(key=lambda entry: entry["relpath"])
    value = hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"
    if record is not None:
        write_text(record, value + "\n")
    return value


def dvc_repo_root(path: Path) -> Path | None:
    """The nearest folder at or above `path` that holds a `.dvc/` folder."""
    for folder in (path, *path.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def tracking_dvc_files(root: Path) -> dict[str, str]:
    """`.dvc` files (in the repository root and the folders between it and `root`) whose out is `root`, by their
    path relative to the repository root: the md5 each records."""
    repo = dvc_repo_root(root)
    if repo is None:
        return {}
    found = {}
    for folder in {repo, *(p for p in root.parents if p.is_relative_to(repo))}:
        for dvc_file in sorted(folder.glob("*.dvc")):
            try:
                outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
            except (OSError, yaml.YAMLError, AttributeError):
                continue
            for out in outs:
                if isinstance(out, dict) and (folder / str(out.get("path", ""))).absolute() == root and out.get("md5"):
                    found[dvc_file.relative_to(repo).as_posix()] = str(out["md5"])
    return found


def data_version(root: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """{"md5": DVC hash of `root`, "tracked_by": the `.dvc` file recording that same hash, or None}.

    A folder DVC tracks but whose files changed since is recorded by what was read, with a warning saying how to
    make the `.dvc` file agree.
    """
    root = root.absolute()
    if not root.is_dir():
        return {"md5": None, "tracked_by": None}
    value = dvc_folder_hash(root, cache_dir)
    tracked = tracking_dvc_files(root)
    matching = [path for path, md5 in tracked.items() if md5 == value]
    if tracked and not matching:
        names = ", ".join(tracked)
        log.warning("%s differs from what %s records: `dvc commit` (or `dvc add`) it to version this data", root, names)
    return {"md5": value, "tracked_by": matching[0] if matching else None}


def main(argv: list[str] | None = None) -> None:
    """`python -m mlproj.data_version DIR`: print DIR's version; exit 1 when a `.dvc` file records another one."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m mlproj.data_version DIR")
    root = Path(args[0])
    version = data_version(root)
    print(f"{root}: {version['md5']}" + (f" (as {version['tracked_by']} records)" if version["tracked_by"] else ""))
    if tracking_dvc_files(root.absolute()) and not version["tracked_by"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
