"""The notebooks, the dashboard and the reports as a user sees them: JupyterLab and report
pages in Debian's Chromium (driven by Playwright), every request off this machine refused.

- Each notebook is opened in a JupyterLab server started on a copy of the notebooks, run
  with Run ▸ Run All Cells, and must finish with every chart drawn, no error output, no
  console error and no request that tried to leave the machine.
- The dashboard is driven with real clicks and key presses; each change must redraw the chart
  (the SVG changes) without ever blanking, and the clicked tensor must stay selected. The
  time from the key press or click to the new chart on screen is printed per widget (median
  and worst): the figures quoted in the docs.
- A report built by `lace report` is opened from disk the same way.

Skipped, with the reason, only where no Chromium (or no Playwright) can be had; `make test`
installs Chromium with apt-get.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import ROOT, PageLog, browser, chromium_path, jupyter_lab

CHROMIUM, WHY = chromium_path()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason=f"browser tests need Chromium: {WHY}"),
]

NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: Charts each notebook must draw (LACE charts: `.lace-chart` widgets in JupyterLab).
CHARTS = {
    "01_graph_anatomy.ipynb": 0,
    "02_allocator_policies.ipynb": 2,
    "03_fidelity.ipynb": 0,
    "04_streams_and_overlap.ipynb": 3,
    "05_dashboard.ipynb": 2,
    "06_gpu_streams.ipynb": 2,
}
VIEWPORT = {"width": 1280, "height": 800}
SHOTS = Path(tempfile.gettempdir()) / "lace-screenshots"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """JupyterLab on a copy of notebooks/ (and data/, which notebook 05 reads)."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    shutil.copytree(ROOT / "data", root / "data")
    with jupyter_lab(root, tmp_path_factory.mktemp("lab-home")) as server:
        yield server


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    assert CHROMIUM is not None
    with browser(CHROMIUM) as b:
        yield b


def _page(chromium: Any) -> tuple[Any, PageLog]:
    context = chromium.new_context(viewport=VIEWPORT)
    log = PageLog()
    log.block_network(context)
    page = context.new_page()
    log.watch(page)
    return page, log


def _open(page: Any, lab: Any, notebook: str) -> None:
    """Open the notebook in a fresh workspace and wait for its kernel to be idle."""
    page.goto(lab.tree(f"notebooks/{notebook}", workspace=notebook.split("_")[0]))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_function("document.body.innerText.includes('| Idle')", timeout=90_000)


def _run_all(page: Any, lab: Any, notebook: str) -> None:
    """Open the notebook, wait for its kernel, Run ▸ Run All Cells, wait for the last cell."""
    _open(page, lab, notebook)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    # every code cell gets an execution count, and the kernel goes back to idle
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""",
        timeout=300_000,
    )
    page.wait_for_function("document.body.innerText.includes('| Idle')", timeout=300_000)


def _errors_in_outputs(page: Any) -> list[str]:
    texts = page.eval_on_selector_all(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
        "els => els.map(e => e.textContent)",
    )
    return [t for t in texts if "Traceback" in t or "Error" in t]


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_runs_in_jupyterlab_offline(chromium: Any, lab: Any, notebook: str) -> None:
    page, log = _page(chromium)
    saved = (lab.root / "notebooks" / notebook).read_bytes()
    try:
        _open(page, lab, notebook)
        page.wait_for_timeout(1500)  # time for any metadata rewrite to mark it changed
        # opening asks nothing (no kernel picker) and changes nothing (no unsaved edits that
        # autosave would write): the notebooks record the kernel JupyterLab reports, down to
        # the Python version, which only a kernel on the same Python can match
        assert page.locator(".jp-Dialog").count() == 0
        recorded = json.loads(saved)["metadata"]["language_info"]["version"]
        if recorded == platform.python_version():
            assert page.locator(".lm-TabBar-tab.jp-mod-dirty").count() == 0
        assert (lab.root / "notebooks" / notebook).read_bytes() == saved
        _run_all(page, lab, notebook)
        want = CHARTS[notebook]
        if want:
            page.wait_for_function(
                f"document.querySelectorAll('.lace-chart svg .role-mark').length > 0 && "
                f"document.querySelectorAll('.lace-chart[data-renders]').length >= {want}",
                timeout=60_000,
            )
        charts = page.eval_on_selector_all(".lace-chart[data-renders]", "els => els.length")
        marks = page.eval_on_selector_all(".lace-chart svg .role-mark", "els => els.length")
        print(
            f"\n{notebook}: {charts} chart(s), {marks} mark groups, console errors "
            f"{len(log.errors)}, blocked requests {len(log.blocked)}"
        )
        assert charts == want
        assert not _errors_in_outputs(page)
        assert log.errors == [], log.errors
        assert log.blocked == [], log.blocked
    finally:
        page.context.close()
        lab.stop_kernels()


# --- the dashboard, driven ----------------------------------------------------------------

BLANK_WATCH = """() => {
    window.__laceBlank = 0;
    const tick = () => {
        const chart = document.querySelector('.lace-chart');
        const shown = chart && [...chart.querySelectorAll('.lace-chart-box')]
            .some(b => b.style.visibility !== 'hidden' && b.querySelector('svg .role-mark'));
        if (!shown) window.__laceBlank += 1;
        requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
}"""


def _chart_state(page: Any) -> tuple[int, str]:
    return page.evaluate(
        """() => {
            const c = document.querySelector('.lace-chart');
            const svg = c.querySelector('.lace-chart-box:not([style*=hidden]) svg');
            return [Number(c.dataset.renders || 0), svg ? svg.innerHTML.length + ':' +
                    svg.querySelectorAll('path').length : ''];
        }"""
    )


def _timed(page: Any, act: Any) -> float:
    """Do `act` (a real click or key press) and return ms until the new chart is on screen."""
    before, svg_before = _chart_state(page)
    t0 = page.evaluate("performance.now()")
    act()
    page.wait_for_function(
        f"Number(document.querySelector('.lace-chart').dataset.renders) > {before}",
        timeout=30_000,
    )
    shown = float(page.evaluate("Number(document.querySelector('.lace-chart').dataset.shownAt)"))
    _, svg_after = _chart_state(page)
    assert svg_after != svg_before, "the chart did not change"
    return shown - t0


@pytest.mark.slow
def test_dashboard_widgets_redraw_in_place(chromium: Any, lab: Any) -> None:
    page, log = _page(chromium)
    try:
        _run_all(page, lab, "05_dashboard.ipynb")
        page.wait_for_selector(".lace-chart svg .role-mark", state="attached", timeout=60_000)
        page.evaluate(BLANK_WATCH)
        dash = page.locator(".widget-vbox").first
        SHOTS.mkdir(exist_ok=True)
        page.keyboard.press("Control+b")  # hide the file browser, as on a small screen
        dash.evaluate("e => e.scrollIntoView({block: 'start'})")
        page.screenshot(path=str(SHOTS / "dashboard.png"))
        times: dict[str, list[float]] = {}

        def record(name: str, act: Any) -> None:
            times.setdefault(name, []).append(_timed(page, act))

        slider = dash.locator(".widget-slider").filter(has_text="batch").locator(".noUi-handle")
        policy = page.get_by_label("policy", exact=True)
        streams = dash.locator(".widget-slider").filter(has_text="streams").locator(".noUi-handle")
        layer = dash.locator(".widget-toggle-buttons").first
        # click a tensor: it must stay selected across the redraws below
        rect = page.locator(".lace-chart svg .mark-rect.role-mark path").nth(3)
        rect.click(force=True)
        page.wait_for_function(
            "[...document.querySelectorAll('.widget-html-content')]"
            ".some(e => e.textContent.includes('lifetime'))",
            timeout=10_000,
        )
        picked = page.locator(".widget-html-content", has_text="lifetime").first.inner_text()
        for _ in range(3):
            record("batch (→ key)", lambda: (slider.focus(), page.keyboard.press("ArrowRight")))
        for _ in range(3):
            record("batch (← key)", lambda: (slider.focus(), page.keyboard.press("ArrowLeft")))
        for name in ("happens_before", "alloc_dep", "interleave", "sequential"):
            record("policy (select)", lambda name=name: policy.select_option(label=name))
        for key in ("ArrowLeft", "ArrowLeft", "ArrowRight", "ArrowRight"):
            record("streams (key)", lambda key=key: (streams.focus(), page.keyboard.press(key)))
        for name in ("attn", "GDN", "attn", "GDN"):
            record("layer (click)", lambda name=name: layer.get_by_text(name, exact=True).click())
        mode = dash.locator(".widget-toggle-buttons").nth(1)
        for name in ("prefill", "decode"):
            record("mode (click)", lambda name=name: mode.get_by_text(name, exact=True).click())
        beside = page.get_by_label("beside it", exact=True)
        record("beside it (select)", lambda: beside.select_option(label="policy"))
        assert page.locator(".lace-chart svg .mark-rect.role-mark").count() >= 2
        page.screenshot(path=str(SHOTS / "dashboard-compare.png"))
        record("beside it (select)", lambda: beside.select_option(label="nothing"))
        assert page.evaluate("window.__laceBlank") == 0, "the chart blanked during a redraw"
        still = page.locator(".widget-html-content", has_text="lifetime").first.inner_text()
        assert still.split("·")[0] == picked.split("·")[0], "the selection did not survive"
        dash.evaluate("e => e.scrollIntoView({block: 'start'})")
        page.screenshot(path=str(SHOTS / "dashboard-selected.png"))
        # the whole model: long work, with a progress bar, timed apart from the layer views
        whole = _timed(page, lambda: layer.get_by_text("model", exact=True).click())
        print(f"\nwhole-model stack redraw: {whole:.0f} ms")
        layers = [t for name, ts in times.items() for t in ts]
        every = layers
        print("\nredraw latency in Chromium, widget event → new chart on screen (ms):")
        for name, ts in times.items():
            print(
                f"  {name:16s} n={len(ts)} median {statistics.median(ts):6.0f} worst {max(ts):6.0f}"
            )
        print(
            f"  all              n={len(every)} median {statistics.median(every):6.0f} "
            f"worst {max(every):6.0f}; blank frames 0; console errors {len(log.errors)}"
        )
        assert log.errors == [], log.errors
        assert log.blocked == [], log.blocked
    finally:
        page.context.close()
        lab.stop_kernels()


# --- reports, opened from disk ------------------------------------------------------------


@pytest.mark.slow
def test_report_pages_draw_offline(chromium: Any, tmp_path: Path) -> None:
    from concurrency.report import build_report

    src = tmp_path / "notebooks"
    src.mkdir()
    shutil.copy(ROOT / "notebooks" / "05_dashboard.py", src)
    shutil.copytree(ROOT / "data", tmp_path / "data")
    (page_path,) = build_report(src, tmp_path / "out", parameters={"BATCH": 2})
    page, log = _page(chromium)
    try:
        page.goto(page_path.as_uri())
        page.wait_for_selector(".lace-vega svg .role-mark", state="attached", timeout=30_000)
        page.wait_for_function(
            "[...document.querySelectorAll('.lace-vega')].every(e => e.querySelector('svg'))"
        )
        charts = page.eval_on_selector_all(".lace-vega svg", "els => els.length")
        print(
            f"\nreport {page_path.name}: {charts} chart(s), console errors {len(log.errors)}, "
            f"blocked {len(log.blocked)}"
        )
        assert page.title().startswith("05 · The explorer")
        assert charts == 2  # the dashboard's chart and the side-by-side comparison
        assert "B=2" in page.inner_text("body")  # the parameter reached the notebook
        assert log.errors == [] and log.blocked == []
    finally:
        page.context.close()


@pytest.mark.slow
def test_slides_open_offline(chromium: Any, tmp_path: Path) -> None:
    """`lace slides`: a reveal.js deck from disk, no network, keys move between slides."""
    from concurrency.slides import build_slides

    src = tmp_path / "notebooks"
    src.mkdir()
    shutil.copy(ROOT / "notebooks" / "05_dashboard.py", src)
    shutil.copytree(ROOT / "data", tmp_path / "data")
    (deck,) = build_slides(src, tmp_path / "slides")
    page, log = _page(chromium)
    try:
        page.goto(deck.as_uri())
        page.wait_for_function("window.Reveal && Reveal.isReady()", timeout=30_000)
        slides = page.evaluate("Reveal.getTotalSlides()")
        page.keyboard.press("ArrowRight")
        assert page.evaluate("Reveal.getIndices().h") == 1
        page.wait_for_selector(".lace-vega svg .role-mark", state="attached", timeout=30_000)
        charts = page.eval_on_selector_all(".lace-vega svg", "els => els.length")
        print(
            f"\nslides {deck.name}: {slides} slides, {charts} chart(s), console errors "
            f"{len(log.errors)}, blocked {len(log.blocked)}"
        )
        assert slides >= 3 and charts == 2
        assert log.errors == [] and log.blocked == []
    finally:
        page.context.close()
