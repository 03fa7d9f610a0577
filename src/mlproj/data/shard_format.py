"""A shard set, as `mlproj prepare shards=URL` writes it and `data.shards=URL` reads it (a local folder or gs://).

```
URL/
  train/ val/ [test/]   one LitData optimized dataset per split (LitData's index.json and chunk-*.bin); every sample
                        is {"image": bytes, "label": int, "path": str}: the image resized to the short side and
                        JPEG-encoded (when it was no larger than the short side, stored losslessly: its own JPEG bytes
                        when upright RGB or gray, else PNG), its class index, and its file path relative to the data
                        root it was checked in
  manifest.csv          the checked file list the shards hold (path, label, split, width, height, bytes)
  mlproj-shards.json    the index, written last: its presence marks a complete set
```

The index holds what a run needs before its first step without listing or downloading the set: class names, split
sizes and class counts, the file-list fingerprint the set was written from (a second prepare of unchanged files is
`up to date`) and the data version. A run records the index's sha1, which pins every byte of the set.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from mlproj.errors import ConfigError
from mlproj.storage import is_remote, read_text


class ShardReadError(ConfigError):
    """A chunk that could not be downloaded (after the storage client's own retries) or an image that does not
    decode, mid-epoch: the run stops with one line naming it, keeping a checkpoint of where it stopped."""


FORMAT = "mlproj-shards"
VERSION = 1  # bump when samples or the index change shape: readers refuse other versions with one line
INDEX = "mlproj-shards.json"
MANIFEST = "manifest.csv"
SPLITS = ("train", "val", "test")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_png(image: bytes | memoryview) -> bool:
    """Whether a stored image is PNG (stored losslessly and not a JPEG originally); every other one is JPEG."""
    return bytes(image[:8]) == PNG_SIGNATURE


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


@dataclass(frozen=True)
class ShardIndex:
    classes: list[str]
    splits: dict[str, int]  # images per split
    class_counts: dict[str, list[int]]  # per split, images per class (in `classes` order)
    fingerprint: str  # mlproj.data.fingerprint of the checked file list the set was written from
    data_version: dict[str, Any]  # mlproj.data_version of the data root, when it was written
    short_side: int | None  # images were shrunk to this short side (None: stored as they were)
    quality: int  # JPEG quality of the resized images
    source: str  # the data root the files were checked in
    format: str = FORMAT
    version: int = VERSION
    url: str = field(default="", compare=False)  # where it was read from (not stored)
    digest: str = field(default="", compare=False)  # sha1 of the stored index file (not stored)

    def split_url(self, split: str) -> str:
        return join(self.url, split)

    def to_json(self) -> str:
        stored = {k: v for k, v in asdict(self).items() if k not in ("url", "digest")}
        return json.dumps(stored, indent=2) + "\n"


def read_index(url: str, key: str = "data.shards") -> ShardIndex:
    """The index of the shard set at `url`, or one ConfigError naming `key`, the URL and the fix."""
    url = url.rstrip("/")
    text = read_text(join(url, INDEX))
    if text is None:
        where = "bucket path" if is_remote(url) else "folder"
        raise ConfigError(
            f"{key}={url} holds no {INDEX} (no such {where}, or an unfinished set): write the shards with"
            f" `mlproj prepare data=NAME shards={url}`"
        )
    try:
        stored = json.loads(text)
        if stored.get("format") != FORMAT:
            raise ValueError(f"format {stored.get('format')!r}")
        if stored.get("version") != VERSION:
            raise ConfigError(
                f"{key}={url} was written as shard format version {stored.get('version')}, this mlproj reads"
                f" version {VERSION}: write them again with `mlproj prepare data=NAME shards=NEW_URL`"
            )
        index = ShardIndex(**stored)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{key}={url}: {INDEX} is not an mlproj shard index ({error})") from error
    digest = hashlib.sha1(text.encode()).hexdigest()
    return ShardIndex(**{**asdict(index), "url": url, "digest": digest})
