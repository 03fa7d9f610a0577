"""`mlproj demo [MODEL_PATH] [--host H] [--port P]`: drag-and-drop predictions in the browser (Gradio).

The same Predictor as the API, fed the uploaded file's own bytes (a file input, not an image one, so Gradio does
not re-encode it): the demo answers what `POST /predict` answers. Gradio is the optional `demo` extra.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlproj.errors import ConfigError
from mlproj.flags import FlagParser, check_paths
from mlproj.serve.command import PORT, parse_with_model, with_model_path

if TYPE_CHECKING:
    from mlproj.serve.predictor import Predictor


def label_scores(predictor: "Predictor", path: str, top_k: int = 5) -> dict[str, float]:
    """{label: probability} of the image file at `path`, the shape Gradio's Label output shows."""
    from mlproj.serve.predictor import decode_upload

    (predictions,) = predictor.top_k([decode_upload(Path(path).read_bytes())], top_k)
    return {p.label: p.probability for p in predictions}


def gradio() -> Any:
    try:
        import gradio
    except ImportError as error:
        raise ConfigError("mlproj demo needs Gradio: pip install -e '.[demo]'") from error
    return gradio


def build_demo(predictor: "Predictor") -> Any:
    """A gr.Interface around `predictor`; `.launch()` serves it (never through a public share link)."""
    gr = gradio()
    card = predictor.card
    return gr.Interface(
        fn=lambda path: label_scores(predictor, path),
        inputs=gr.File(label="image", file_types=["image"], type="filepath"),
        outputs=gr.Label(num_top_classes=min(5, len(card.classes)), label="prediction"),
        title=f"mlproj: {card.backbone}",
        description=f"{len(card.classes)} classes; model {card.source} ({card.format})",
        flagging_mode="never",
    )


def parser() -> FlagParser:
    parser = FlagParser(prog="mlproj demo", description="Drag-and-drop predictions of a model (Gradio).")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=PORT, default=os.environ.get("PORT", "7860"), note="$PORT when set")
    return with_model_path(parser)


def parse_args(argv: list[str]) -> argparse.Namespace:
    return parse_with_model(parser(), argv)


def main(argv: list[str] | None = None) -> None:
    args = check_paths(parser(), parse_args(sys.argv[1:] if argv is None else argv))
    from mlproj.serve.predictor import Predictor

    gradio()  # before the model loads: a missing extra is said at once
    demo = build_demo(Predictor.load(args.model_path))
    demo.launch(server_name=args.host, server_port=args.port, share=False)
