"""notebooks/quickstart.ipynb runs top to bottom headless (nbclient, CPU) with tiny settings.

Colab and Kaggle users meet jaxmed through this notebook first, so a broken cell is a broken
product. The checked-in copy must carry no outputs (they go stale and bloat diffs).
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"

# What CI can afford: the demo's phantoms at 32 px, 1 + 1 epochs, random init (no weight file).
TINY_PARAMETERS = """\
DATA_ROOT = None
CONFIG = "demo"
FROZEN_EPOCHS = 1
FINETUNE_EPOCHS = 1
IMAGE_SIZE = 32
WEIGHTS = None
WORKDIR = {workdir!r}
"""


def notebook_tools():
  """nbformat and nbclient, skipping with the reason when the test dependencies are missing."""
  nbformat = pytest.importorskip("nbformat", reason="nbformat not installed (pip install nbformat)")
  nbclient = pytest.importorskip("nbclient", reason="nbclient not installed (pip install nbclient)")
  # Found, not imported: an imported ipykernel in this process could change what other tests see.
  if importlib.util.find_spec("ipykernel") is None:
    pytest.skip("ipykernel not installed: no Python kernel to run notebooks (pip install ipykernel)")
  return nbformat, nbclient


def execute(nb, cwd: Path):
  """Runs `nb` in place in a fresh 'python3' kernel started in `cwd`, raising on a cell's error.

  A first cell reports the kernel's interpreter: jupyter_client starts the 'python3' kernelspec
  (argv 'python') with sys.executable when ipykernel is installed here, and a kernel from some
  other Python would test another install of jaxmed, or none.
  """
  nbformat, nbclient = notebook_tools()
  nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)", id="which-python"))
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(cwd)}}).execute()
  which = nb.cells.pop(0)
  kernel_python = "".join(o.get("text", "") for o in which.outputs).strip()
  assert Path(kernel_python).resolve() == Path(sys.executable).resolve(), (
      f"the kernel runs {kernel_python}, not this interpreter {sys.executable}")
  return nb


def text_of(cell) -> str:
  """Everything a cell showed: streams, errors, and the text and HTML of displays."""
  parts = []
  for o in cell.outputs:
    parts.append(o.get("text", "") + "".join(o.get("traceback", [])))
    for mime in ("text/plain", "text/html"):
      value = o.get("data", {}).get(mime, "")
      parts.append("".join(value) if isinstance(value, list) else value)
  return "".join(parts)


def test_checked_in_notebook_is_clean_and_parameterised():
  nb = json.loads(NOTEBOOK.read_text())
  assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3"
  code = [c for c in nb["cells"] if c["cell_type"] == "code"]
  assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code), \
      "clear the notebook's outputs before committing"
  tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
  assert len(tagged) == 1, "exactly one cell tagged 'parameters' (papermill)"
  names = {line.split("=")[0].strip() for line in "".join(tagged[0]["source"]).splitlines()
           if "=" in line and not line.lstrip().startswith("#")}
  assert names == {"DATA_ROOT", "CONFIG", "FROZEN_EPOCHS", "FINETUNE_EPOCHS", "IMAGE_SIZE", "WEIGHTS",
                   "WORKDIR"}
  try:
    import nbformat
  except ImportError:
    return
  nbformat.validate(nbformat.reads(NOTEBOOK.read_text(), as_version=4))


def test_progress_updates_one_display_in_a_kernel(tmp_path):
  # The real ipykernel, not a fake: Progress must see it is in a kernel and redraw one output.
  nbformat, _ = notebook_tools()
  nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
      "from jaxmed.runtime.progress import Progress\n"
      "p = Progress(10, 8)\n"
      "assert p.notebook and not p.tty\n"
      "for i in range(1, 11):\n"
      "  p.update('epoch 1/1 (frozen)', i, 0.5)\n"
      "p.newline()\n")])
  outputs = execute(nb, tmp_path).cells[0].outputs
  # nbclient applies update_display_data to the output it names, as a browser does.
  assert [o["output_type"] for o in outputs] == ["display_data"], outputs
  assert "step 10/10" in outputs[0]["data"]["text/plain"]
  assert "<progress" in outputs[0]["data"]["text/html"] and "\033" not in text_of(nb.cells[0])


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
  nbformat, _ = notebook_tools()
  try:
    import jaxmed
    for name in ("config", "demo_data", "doctor", "fit", "load_run", "evaluate", "predict"):
      getattr(jaxmed, name)
  except (ImportError, AttributeError) as e:
    pytest.fail(f"the notebook's jaxmed API is missing: {e}")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # the kernel inherits this environment
  nb = nbformat.read(NOTEBOOK, as_version=4)
  cell = {c.get("id"): c for c in nb.cells}
  workdir = tmp_path / "runs" / "quickstart"
  cell["parameters"].source = TINY_PARAMETERS.format(workdir=str(workdir))
  execute(nb, tmp_path)  # raises nbclient's CellExecutionError naming the failing cell

  assert (workdir / "summary.json").is_file()
  for name in ("doctor", "show", "gradcam", "evaluate", "predict", "report"):
    assert cell[name].outputs, f"cell {name!r} showed nothing"
  assert "\033" not in text_of(cell["fit"]), "ANSI escape codes in the notebook's training output"
  assert workdir.name in text_of(cell["report"])
