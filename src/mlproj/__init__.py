"""mlproj: train timm backbones on folders of images with Lightning, Hydra, W&B and DVC."""

__version__ = "0.2.0"
