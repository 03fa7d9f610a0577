"""Run `python predict.py ...` from a clone; the code is mlproj.predict (installed with the package)."""

from mlproj.predict import main

if __name__ == "__main__":
    main()
