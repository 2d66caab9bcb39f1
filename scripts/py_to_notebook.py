"""Build a notebook from a jupytext percent-format script, with outputs stripped.

Usage: python scripts/py_to_notebook.py src.py notebooks/NN_name.ipynb

Authoring notebooks as percent scripts keeps them reviewable; the committed artefact is
the .ipynb (kernelspec python3, no outputs, no execution counts, no widget state).
"""

import sys

import jupytext
import nbformat


def convert(src: str, dst: str) -> None:
    nb = jupytext.read(src, fmt="py:percent")
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for cell in nb.cells:
        cell.metadata.pop("lines_to_next_cell", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(nb)
    nbformat.write(nb, dst)


if __name__ == "__main__":
    convert(sys.argv[1], sys.argv[2])
