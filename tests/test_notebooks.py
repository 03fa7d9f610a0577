"""notebooks/eda.ipynb runs from the repository with no edits, so it never rots."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, make_image_folder

EDA = ROOT / "notebooks" / "eda.ipynb"


def test_eda_notebook_is_committed_without_outputs() -> None:
    notebook = nbformat.read(EDA, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_eda_notebook_runs_on_a_small_real_folder(tmp_path: Path, monkeypatch) -> None:
    root = make_image_folder(tmp_path / "pics", per_class=5, modes=("RGB", "L", "P"))
    (root / "dog" / "broken.jpg").write_bytes(b"<html>gone</html>")
    monkeypatch.setenv("MLPROJ_EDA_ROOT", str(root))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's own output folder goes with the test's
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel then draws inline, as in Jupyter
    notebook = nbformat.read(EDA, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert f"{root}: 15 images, 3 classes" in text
    assert f"rejected {root / 'dog' / 'broken.jpg'}: not an image Pillow can read" in text
    figures = [o for cell in notebook.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(figures) == 3
