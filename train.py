"""Run `python train.py ...` from a clone; the code is mlproj.train (installed with the package), imported by
`run` so that a Ctrl+C while torch loads ends as one line too."""

from mlproj.cli import run

if __name__ == "__main__":
    run("train")
