"""Slides for design reviews: the notebooks executed headless and written as reveal.js decks
(`lace slides`), one self-contained HTML file per notebook that opens offline.

nbconvert's reveal template loads reveal.js, require.js, jQuery and MathJax from CDNs; LACE's
`lace_slides` template inlines reveal.js 4.6.1 (vendored under `templates/lace_slides/reveal`)
and the Vega bundle instead, so a deck opens from disk on a plane. Each Markdown cell starts a
slide (unless the notebook sets `slideshow` metadata itself); code is hidden, its output shown;
the charts stay interactive (tooltips, selection, zoom), widgets show their static version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from concurrency.report import (
    DEFAULT_TIMEOUT_S,
    OFFLINE_CHARTS,
    PAGE_PRIORITY,
    _check_parameters,
    _for_page,
    _require_notebooks,
    inject_parameters,
    read_notebook,
    run_notebook,
    template_dir,
)

if TYPE_CHECKING:
    from nbformat import NotebookNode


def mark_slides(nb: NotebookNode) -> None:
    """Give every cell a slide type where the notebook has none: each Markdown cell starts a
    slide, the cells after it continue it."""
    if any("slideshow" in c.get("metadata", {}) for c in nb.cells):
        return
    for cell in nb.cells:
        kind = "slide" if cell.cell_type == "markdown" else "-"
        cell.metadata["slideshow"] = {"slide_type": kind}


def _reveal(name: str) -> str:
    return (template_dir() / "lace_slides" / "reveal" / name).read_text(encoding="utf-8")


def export_slides(nb: NotebookNode, out_path: Path) -> Path:
    """Write `nb` (executed) as a reveal.js deck that needs no network; return its path."""
    from nbconvert import SlidesExporter

    from concurrency.render.vega import page_head

    nb = _for_page(nb, out_path.name.split(".")[0])
    mark_slides(nb)
    exporter = SlidesExporter(
        template_name="lace_slides",
        extra_template_basedirs=[str(template_dir())],
        display_data_priority=PAGE_PRIORITY,
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    resources = {
        "lace_head": page_head(),
        "lace_reveal_js": _reveal("reveal.js").replace("</script", "<\\/script"),
        "lace_reveal_css": _reveal("reveal.css"),
        "lace_reveal_theme": _reveal("white.css"),
    }
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    out_path.write_text(body, encoding="utf-8")
    return out_path


def build_slides(
    notebooks_dir: Path,
    out_dir: Path,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    *,
    only: list[str] | None = None,
    parameters: Mapping[str, object] | None = None,
    on_notebook: Callable[[int, int, Path], None] | None = None,
) -> list[Path]:
    """Execute the `NN_*.py` notebooks (those whose names start with one of `only`, e.g.
    ["01", "05"]; default all) and write `NN_name.slides.html` into `out_dir`."""
    import nbformat

    notebooks = _require_notebooks(Path(notebooks_dir))
    if only:
        chosen = [p for p in notebooks if any(p.name.startswith(o) for o in only)]
        if not chosen:
            from concurrency.report import NotebookError

            names = ", ".join(p.name for p in notebooks)
            raise NotebookError(notebooks_dir, f"no notebook matches {only}; there are {names}")
        notebooks = chosen
    params = dict(parameters or {})
    if params:
        _check_parameters(notebooks, params)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    decks = []
    for i, path in enumerate(notebooks, 1):
        if on_notebook is not None:
            on_notebook(i, len(notebooks), path)
        nb = read_notebook(path)
        inject_parameters(nb, params)
        nb.cells.insert(0, nbformat.v4.new_code_cell(OFFLINE_CHARTS))
        run_notebook(nb, path, timeout_s)
        nb.cells.pop(0)
        nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        decks.append(export_slides(nb, out_dir / f"{path.stem}.slides.html"))
    return decks
