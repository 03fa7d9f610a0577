"""The one inference layer: a checkpoint or an exported model in, the model, its classes and its evaluation
preprocessing out (`mlproj.inference.model.load_model`). eval, predict, export, serve, drift and the reports all
load through it; `card` is the JSON that travels beside exported files, `runtimes` runs TorchScript and ONNX files.
"""
