"""`mlproj export ckpt_path=... format=torchscript|onnx`: a checkpoint as a model file that serves without Lightning.

`card` is the JSON written beside every exported file (what serving needs besides the weights), `formats` writes,
loads and quantizes the two formats, `task` is the Hydra task that checks the result against PyTorch.
"""


def main() -> None:
    """Imported lazily so `mlproj serve` can read model cards without composing a Hydra app."""
    from mlproj.export.task import main as task_main

    task_main()
