"""Kaggle's "Mushrooms classification - common genus's images": Mushrooms/<Genus>/*.jpg, split here."""

import logging
from pathlib import Path

from mlproj.data.imagefolder import ImageFolderDataModule
from mlproj.data.scan import class_folders

log = logging.getLogger(__name__)

GENERA = (
    "Agaricus",
    "Amanita",
    "Boletus",
    "Cortinarius",
    "Entoloma",
    "Hygrocybe",
    "Lactarius",
    "Russula",
    "Suillus",
)


class MushroomsDataModule(ImageFolderDataModule):
    def image_root(self) -> Path:
        """Accept the folder the Kaggle archive unpacks to, or its Mushrooms/ folder itself."""
        root = self.root / "Mushrooms" if (self.root / "Mushrooms").is_dir() else self.root
        if root.is_dir():
            found = {p.name for p in class_folders(root)}
            missing = sorted(set(GENERA) - found)
            if missing:
                log.warning("data.root=%s lacks the genera %s of the Kaggle set", root, ", ".join(missing))
        return root
