"""`mlproj export ckpt_path=... format=torchscript|onnx`: a checkpoint as a model file that serves without Lightning.

`formats` writes and quantizes the two formats (the model card written beside each file and the runtimes that
load them are mlproj.inference), `task` is the Hydra task that checks the result against PyTorch.
"""


def main() -> None:
    """Imported here, so importing `mlproj.export.formats` does not build the Hydra task."""
    from mlproj.export.task import main as task_main

    task_main()
