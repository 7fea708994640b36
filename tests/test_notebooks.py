"""The notebooks: each runs top to bottom (at the small size the notebooks read from
``SSM_NOTEBOOK_SMALL``), and each stored copy has the outputs of a full-size run.

Outputs are remade with ``python tools/execute_notebooks.py``."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# The notebooks the project promises (the docs' index lists the same).
NAMES = ("hippo_memory", "s4_kernels", "selective_scan", "msign_mclip", "monarch", "use_in_your_flax_project")
FULL_SIZE_LIMIT_S = 180  # each notebook at full size on 2 CPU cores


def _tool():
    spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "tools" / "execute_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _read(name):
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())


def test_the_promised_notebooks_are_there_and_no_others():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


def test_the_docs_list_every_notebook():
    index = (ROOT / "docs" / "index.md").read_text()
    for name in NAMES:
        assert f"notebooks/{name}\n" in index, name


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_has_the_outputs_of_a_full_run(name):
    nb = _read(name)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "no code cells"
    # Run in order from a fresh kernel: execution counts 1, 2, 3, ...
    assert [c["execution_count"] for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    stderr = [o["text"] for o in outputs if o.get("name") == "stderr"]
    assert not stderr, f"warnings or errors in the stored outputs: {stderr[:2]}"
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot"
    assert str(ROOT) not in json.dumps(nb), "a path of the machine that ran it is in the notebook"
    # The first cell is the page title; the last says what made the outputs.
    first, last = nb["cells"][0], nb["cells"][-1]
    assert first["cell_type"] == "markdown" and "".join(first["source"]).startswith("# ")
    record = nb["metadata"]["ssm"]
    assert record["command"] == f"python tools/execute_notebooks.py notebooks/{name}.ipynb"
    assert "provenance" in last["metadata"]["tags"] and record["date"] in "".join(last["source"])
    assert 0 < record["wall_s"] < FULL_SIZE_LIMIT_S


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name):
    nb, _ = _tool().execute(NOTEBOOKS / f"{name}.ipynb", small=True)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the small run drew no plot"
