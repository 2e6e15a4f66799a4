"""Run LACE's notebooks headless and publish them as HTML: the `lace report` command.

Notebooks live in `notebooks/` as jupytext percent scripts (`NN_name.py`), which review well
in git; the paired `.ipynb` files are for people who open them in JupyterLab. The report
converts each script to a notebook in memory, executes it with nbclient in a kernel running
this very interpreter (so a virtual environment's packages are what the notebook sees), and
writes `NN_name.html` plus the executed `NN_name.ipynb` into the output folder.

A cell that fails stops the report with a one-line `NotebookError` naming the notebook, the
cell and the exception, instead of the kernel's traceback.

The notebook tooling (jupytext, nbformat, nbclient, nbconvert, jupyter_client) takes a second
or more to import, so it is imported inside the functions that use it: registering the
`report` command with the `lace` parser costs nothing, and a missing package is one
`MissingToolError` naming the fix.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Callable, Mapping
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from concurrency.errors import LaceError, MissingToolError

if TYPE_CHECKING:
    from jupyter_client.manager import AsyncKernelManager
    from nbformat import NotebookNode

NOTEBOOK_GLOB = "[0-9][0-9]_*.py"
DEFAULT_TIMEOUT_S = 600
KERNEL_NAME = "python3"  # jupyter_client's NATIVE_KERNEL_NAME: the interpreter's ipykernel
_MAX_DETAIL = 300
NOTEBOOK_PACKAGES = ("jupytext", "nbformat", "nbclient", "nbconvert", "jupyter_client")


class NotebookError(LaceError):
    """A notebook that is missing or does not run to the end; the message says which and why."""

    def __init__(self, notebook: Path | str, message: str) -> None:
        self.notebook = str(notebook)
        super().__init__(message)


def find_notebooks(notebooks_dir: Path) -> list[Path]:
    """The `NN_*.py` notebook scripts in `notebooks_dir`, in number order.

    Only numbered scripts count, so helper modules beside them are never executed as notebooks.
    """
    return sorted(p for p in Path(notebooks_dir).glob(NOTEBOOK_GLOB) if p.is_file())


def _require_notebook_packages() -> None:
    """Import the notebook tooling now, or raise one `MissingToolError` naming the fix."""
    import importlib

    for name in NOTEBOOK_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingToolError(
                f"lace report needs the notebook packages ({', '.join(NOTEBOOK_PACKAGES)}); "
                f"{name} cannot be imported ({exc}); run `make setup` or "
                "pip install jupytext nbclient nbconvert"
            ) from None


def read_notebook(path: Path) -> NotebookNode:
    """Parse a jupytext percent script (or an `.ipynb`) into an in-memory notebook."""
    path = Path(path)
    if not path.is_file():
        raise NotebookError(path, f"notebook {path} not found")
    _require_notebook_packages()
    import jupytext

    fmt = "ipynb" if path.suffix == ".ipynb" else "py:percent"
    return jupytext.read(path, fmt=fmt)


def execute_notebook(path: Path, timeout_s: int = DEFAULT_TIMEOUT_S) -> NotebookNode:
    """Execute the notebook at `path` headless and return it with its outputs.

    The kernel runs in the notebook's own folder (so relative paths behave as in JupyterLab)
    and uses this interpreter's ipykernel. `timeout_s` bounds each cell, not the whole run.
    Raises `NotebookError` naming the notebook, the cell and the error if a cell fails.
    """
    path = Path(path)
    nb = read_notebook(path)
    run_notebook(nb, path, timeout_s)
    return nb


def run_notebook(nb: NotebookNode, path: Path, timeout_s: int) -> None:
    """Execute `nb` in place, with `path`'s folder as the working directory."""
    _require_notebook_packages()
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    current: dict[str, int] = {"index": -1}
    km = _interpreter_kernel_manager()
    client = NotebookClient(
        nb,
        km=km,
        timeout=timeout_s,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(Path(path).resolve().parent)}},
        on_cell_start=_remember_cell(current),
    )
    try:
        client.execute()
    except CellTimeoutError:
        raise _cell_failure(path, nb, current["index"], f"timed out after {timeout_s} s") from None
    except DeadKernelError:
        raise _cell_failure(path, nb, current["index"], "the kernel died") from None
    except CellExecutionError as err:
        detail = _one_line(f"{err.ename}: {err.evalue}")
        raise _cell_failure(path, nb, current["index"], detail) from None
    finally:
        _shutdown(km)


def _shutdown(km: AsyncKernelManager) -> None:
    """Stop the kernel for good: a kernel left running keeps ports and a process alive for
    every later notebook of the same test run or report."""
    from jupyter_core.utils import run_sync

    if km.has_kernel:
        run_sync(km.shutdown_kernel)(now=True)


def _interpreter_kernel_manager() -> AsyncKernelManager:
    """A kernel manager whose "python3" kernel is always this interpreter's ipykernel.

    jupyter_client would otherwise take the first `python3` kernelspec on the Jupyter path,
    which may be a user-wide one pointing at another Python without LACE installed. With no
    kernel directories to search it falls back to ipykernel's built-in spec, whose command is
    `sys.executable -m ipykernel_launcher`.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    specs = KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)
    km = AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)
    return km


def _remember_cell(current: dict[str, int]) -> Callable[..., None]:
    """An nbclient `on_cell_start` hook that records which cell is running, for error text."""

    def hook(cell: Any = None, cell_index: int = -1, **_: Any) -> None:
        current["index"] = cell_index

    return hook


def _cell_failure(path: Path, nb: NotebookNode, index: int, detail: str) -> NotebookError:
    """A `NotebookError` that names the notebook, the 1-based cell and its first line."""
    where = "a cell"
    if 0 <= index < len(nb.cells):
        first = next((ln for ln in nb.cells[index].source.splitlines() if ln.strip()), "")
        where = f"cell {index + 1} ({_one_line(first)!r})"
    return NotebookError(path, f"notebook {Path(path).name} failed at {where}: {detail}")


def _one_line(text: str) -> str:
    """Collapse whitespace and strip ANSI colours so a message fits on one line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


#: Output types a page shows, best first: a chart's or the dashboard's HTML (drawn by the
#: inlined Vega) rather than its widget, which needs a kernel.
PAGE_PRIORITY = [
    "text/html",
    "image/svg+xml",
    "image/png",
    "image/jpeg",
    "text/markdown",
    "text/latex",
    "text/plain",
]


def notebook_title(nb: NotebookNode, fallback: str) -> str:
    """The first Markdown heading of the notebook (the page's title), else `fallback`."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
    return fallback


def template_dir() -> Path:
    """nbconvert templates shipped with LACE (`lace_report`: the lab look, nothing online)."""
    return Path(str(files("concurrency").joinpath("templates")))


def export_html(nb: NotebookNode, out_path: Path) -> Path:
    """Write `nb` as a standalone HTML page in JupyterLab's look that needs no network: no
    CDN scripts, the chart library inlined once, the notebook's heading as its title."""
    _require_notebook_packages()
    from nbconvert import HTMLExporter

    from concurrency.render.vega import page_head

    nb = _for_page(nb, out_path.stem)
    exporter = HTMLExporter(
        template_name="lace_report",
        extra_template_basedirs=[str(template_dir())],
        display_data_priority=PAGE_PRIORITY,
    )
    body, _ = exporter.from_notebook_node(nb, resources={"lace_head": page_head()})
    out_path.write_text(body, encoding="utf-8")
    return out_path


def _for_page(nb: NotebookNode, name: str) -> NotebookNode:
    """A copy of `nb` with a title and without the widgets' saved state (which would make
    nbconvert load the widgets' HTML manager from a CDN; widgets need a kernel anyway)."""
    import copy

    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)
    nb.metadata["title"] = notebook_title(nb, name)
    return nb


def build_report(
    notebooks_dir: Path,
    out_dir: Path,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    *,
    on_notebook: Callable[[int, int, Path], None] | None = None,
    parameters: Mapping[str, object] | None = None,
) -> list[Path]:
    """Execute every `NN_*.py` notebook in `notebooks_dir` and write HTML into `out_dir`.

    For each notebook writes `out_dir/NN_name.html` and the executed `out_dir/NN_name.ipynb`;
    returns the HTML paths in notebook order. Stops at the first failing notebook with a
    `NotebookError`; a missing folder or one with no notebooks is an error too, so an empty
    report is never mistaken for a good one. `on_notebook(i, n, path)` is called before the
    i-th (1-based) of n notebooks runs (the CLI's progress line).

    `parameters` (e.g. {"MODEL": "qwen3.5-9b", "BATCH": 4}) override the values of each
    notebook's cell tagged `parameters`, as papermill does: a cell tagged
    `injected-parameters` after it sets the names that cell defines. A name no notebook
    defines is an error.
    """
    notebooks_dir, out_dir = Path(notebooks_dir), Path(out_dir)
    notebooks = _require_notebooks(notebooks_dir)
    _require_notebook_packages()
    if out_dir.exists() and not out_dir.is_dir():
        raise NotebookError(out_dir, f"output folder '{out_dir}' is a file; pass --out DIR")
    params = dict(parameters or {})
    if params:
        _check_parameters(notebooks, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = []
    for i, path in enumerate(notebooks, 1):
        if on_notebook is not None:
            on_notebook(i, len(notebooks), path)
        pages.append(_report_one(path, out_dir, timeout_s, params))
    return pages


def parameter_names(nb: NotebookNode) -> list[str]:
    """The names the notebook's `parameters` cell assigns (none without such a cell)."""
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse(cell.source)
            return [
                t.id
                for node in tree.body
                if isinstance(node, ast.Assign)
                for t in node.targets
                if isinstance(t, ast.Name)
            ]
    return []


def inject_parameters(nb: NotebookNode, params: Mapping[str, object]) -> list[str]:
    """Insert after the `parameters` cell a cell setting those of `params` it defines; return
    the names set."""
    import nbformat

    names = parameter_names(nb)
    chosen = {k: v for k, v in params.items() if k in names}
    if not chosen:
        return []
    at = next(
        i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])
    )
    source = "# Parameters given to `lace report`\n" + "\n".join(
        f"{k} = {v!r}" for k, v in chosen.items()
    )
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at + 1, cell)
    return list(chosen)


def _check_parameters(notebooks: list[Path], params: Mapping[str, object]) -> None:
    known: set[str] = set()
    for path in notebooks:
        known.update(parameter_names(read_notebook(path)))
    unknown = sorted(set(params) - known)
    if unknown:
        raise NotebookError(
            notebooks[0].parent,
            f"no notebook takes the parameter(s) {', '.join(unknown)}; the notebooks' "
            f"parameters are {', '.join(sorted(known)) or 'none'}",
        )


def _require_notebooks(notebooks_dir: Path) -> list[Path]:
    """The notebooks to run, or a `NotebookError` saying why there are none."""
    if not notebooks_dir.is_dir():
        raise NotebookError(
            notebooks_dir,
            f"notebooks folder '{notebooks_dir}' not found; run from the repository root "
            "or pass --notebooks DIR",
        )
    notebooks = find_notebooks(notebooks_dir)
    if not notebooks:
        raise NotebookError(notebooks_dir, f"no {NOTEBOOK_GLOB} notebooks in '{notebooks_dir}'")
    return notebooks


#: Run first in every report notebook (and removed from the page): every Altair chart draws
#: through LACE's renderer, whose page fragment the inlined Vega bundle draws with no network.
#: The charts stay interactive (tooltips, selections, zoom) in the page; widgets do not run.
OFFLINE_CHARTS = "from concurrency.render import vega as _lace_vega\n_lace_vega.enable()"


def _report_one(
    path: Path, out_dir: Path, timeout_s: int, params: Mapping[str, object] | None = None
) -> Path:
    """Execute one notebook (with `params` injected); write its executed `.ipynb` (without
    the widgets' state) and its `.html` into `out_dir`."""
    import nbformat

    nb = read_notebook(path)
    inject_parameters(nb, params or {})
    nb.cells.insert(0, nbformat.v4.new_code_cell(OFFLINE_CHARTS))
    run_notebook(nb, path, timeout_s)
    nb.cells.pop(0)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, out_dir / f"{path.stem}.ipynb")
    return export_html(nb, out_dir / f"{path.stem}.html")


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `lace report [--notebooks DIR] [--out DIR] [--timeout S]`.

    `subparsers` is what `ArgumentParser.add_subparsers()` returned. The sub-parser sets
    `func=run_report`, so a parser can dispatch with `args.func(args)`. (The `lace` command
    itself registers the same options through `add_report_arguments`.)
    """
    parser = subparsers.add_parser("report", help=REPORT_HELP)
    add_report_arguments(parser)
    parser.set_defaults(func=run_report)
    return parser


REPORT_HELP = "execute every notebook headless and write HTML into reports/"


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The report's options and description, on a parser made by the caller."""
    parser.description = (
        "Execute notebooks/NN_*.py headless and write NN_*.html (and the executed "
        "NN_*.ipynb) into the output folder."
    )
    parser.add_argument(
        "--notebooks",
        type=Path,
        default=Path("notebooks"),
        metavar="DIR",
        help="folder of NN_*.py notebooks (default: notebooks)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("reports"),
        metavar="DIR",
        help="folder to write the HTML into (default: reports)",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds each cell may run (default: {DEFAULT_TIMEOUT_S})",
    )
    group = parser.add_argument_group(
        "parameters", "set in each notebook whose parameters cell defines them"
    )
    for flag, name, kind, text in REPORT_PARAMETERS:
        group.add_argument(flag, dest=name, type=kind, metavar=name, help=text)


#: `lace report` options that become notebook parameters: (flag, name, type, help).
REPORT_PARAMETERS = (
    ("--model", "MODEL", str, "model preset (e.g. qwen3.5-9b)"),
    ("--batch", "BATCH", int, "decode batch size (sequences)"),
    ("--policy", "POLICY", str, "allocator policy shown by the dashboard (e.g. happens_before)"),
    ("--gpu", "GPU", str, "GPU spec for the simulated timelines (e.g. h200)"),
)


def report_parameters(args: argparse.Namespace) -> dict[str, object]:
    """The notebook parameters given on the command line (only those given)."""
    return {
        name: getattr(args, name)
        for _, name, _, _ in REPORT_PARAMETERS
        if getattr(args, name, None) is not None
    }


def check_timeout(timeout_s: int) -> None:
    """A cell timeout must be a positive number of seconds."""
    if timeout_s <= 0:
        raise LaceError(f"--timeout must be a positive number of seconds, got {timeout_s}")


def run_report(args: argparse.Namespace) -> int:
    """Run the `report` sub-command; print the pages written, or a one-line error.

    Returns 0 on success and 2 on a `LaceError`, printed as `lace: error: ...` like
    `concurrency.cli.main` does, so the command behaves the same called directly or via main.
    """
    timeout_s = getattr(args, "timeout", DEFAULT_TIMEOUT_S)
    try:
        check_timeout(timeout_s)
        pages = build_report(
            Path(args.notebooks), Path(args.out), timeout_s, parameters=report_parameters(args)
        )
    except LaceError as err:
        print(f"lace: error: {err}", file=sys.stderr)
        return 2
    for page in pages:
        print(f"wrote {page}")
    return 0
