"""Run `python eval.py ...` from a clone; the code is mlproj.eval (installed with the package)."""

from mlproj.eval import main

if __name__ == "__main__":
    main()
