"""Run `python train.py ...` from a clone; the code is mlproj.train (installed with the package)."""

from mlproj.train import main

if __name__ == "__main__":
    main()
