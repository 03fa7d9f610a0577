"""The file-list fingerprint: what keys every record kept per version of a data set (image checks, pixel caches,
data versions), so each is reused exactly while the files stay the same.

It reads no file, only each file's size and modification time, so it is cheap enough to compute on every run.
"""

import hashlib
import os

CHECKS_VERSION = 1  # bump when mlproj.data.validate.check_image's verdicts change, so recorded checks are redone


def fingerprint(paths: list[str]) -> str:
    """Changes when any file is added, removed, resized or touched, or when the checks themselves change."""
    digest = hashlib.sha1(f"checks-v{CHECKS_VERSION}\n".encode())
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        except OSError as error:
            digest.update(f"{path}\t{error.errno}\n".encode())
    return digest.hexdigest()[:20]
