"""Execute the notebooks in place and store their outputs, with where and how they ran.

    python tools/execute_notebooks.py                       # every notebooks/*.ipynb
    python tools/execute_notebooks.py notebooks/monarch.ipynb

Each notebook runs top to bottom at full size in a fresh kernel of this interpreter, from
the ``notebooks/`` folder, and is written back with its outputs and plots. Its last cell
then says the command, the date, the machine (with its load average) and the wall time
that made the outputs; ``metadata.ssm`` holds the same. Time on a quiet machine.

The test suite runs the same ``execute`` with ``small=True``: the environment variable
``SSM_NOTEBOOK_SMALL=1``, which every notebook reads to shrink its sizes, and nothing is
written back.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SMALL_VARIABLE = "SSM_NOTEBOOK_SMALL"
PROVENANCE_TAG = "provenance"  # the tag of the last cell, which this script writes
CELL_TIMEOUT_S = 600


def execute(path: pathlib.Path, *, small: bool):
    """Run the notebook at ``path`` in a fresh kernel; return the executed notebook
    (an ``nbformat.NotebookNode``) and the wall time in seconds. A cell that raises
    raises ``nbclient.exceptions.CellExecutionError`` naming the cell."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    # The float64 references are small NumPy SVDs and solves: one BLAS thread runs them
    # fastest and leaves the cores to XLA (two OpenBLAS threads on a busy 2-core machine
    # made a 256x384 SVD 100x slower). The test suite's conftest sets the same.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    saved = os.environ.get(SMALL_VARIABLE)
    os.environ[SMALL_VARIABLE] = "1" if small else "0"  # the kernel inherits the environment
    try:
        start = time.perf_counter()
        nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}}).execute()
        wall_s = time.perf_counter() - start
    finally:
        if saved is None:
            os.environ.pop(SMALL_VARIABLE)
        else:
            os.environ[SMALL_VARIABLE] = saved
    return nb, wall_s


def provenance(path: pathlib.Path, wall_s: float) -> dict:
    from ssm.bench.memory import machine

    return {"command": f"python tools/execute_notebooks.py {path.relative_to(ROOT).as_posix()}",
            "date": datetime.date.today().isoformat(), "machine": machine(), "wall_s": round(wall_s, 1)}


def stamp(nb, record: dict) -> None:
    """Write ``record`` into ``nb.metadata.ssm`` and as the notebook's last cell
    (replacing the one an earlier run wrote)."""
    import nbformat

    nb.metadata["ssm"] = record
    text = (f"*Outputs made by `{record['command']}` on {record['date']} in {record['wall_s']:.0f} s "
            f"on {record['machine']}.*")
    cell = nbformat.v4.new_markdown_cell(text, metadata={"tags": [PROVENANCE_TAG]})
    cells = [c for c in nb.cells if PROVENANCE_TAG not in c.get("metadata", {}).get("tags", [])]
    nb.cells = [*cells, cell]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="*", type=pathlib.Path, help="default: every notebooks/*.ipynb")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # this checkout's ssm, installed or not
    import nbformat

    paths = [path.resolve() for path in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))
    for path in paths:
        print(f"{path.name}: running ...", flush=True)
        nb, wall_s = execute(path, small=False)
        stamp(nb, provenance(path, wall_s))
        nbformat.write(nb, path)
        print(f"{path.name}: {wall_s:.0f} s, {path.stat().st_size / 2**10:.0f} KiB", flush=True)


if __name__ == "__main__":
    main()
