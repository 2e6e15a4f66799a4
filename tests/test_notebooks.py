"""Notebook plumbing: paired .py/.ipynb files agree, every notebook runs, the report builds.

The repository's notebooks are jupytext percent scripts (`notebooks/NN_*.py`) paired with
`.ipynb` files; both are committed, so a drift between them means someone edited one side
without `jupytext --sync`. Report-builder tests use tiny notebooks made in `tmp_path` so
they stay fast whatever the real notebooks do.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from concurrency.errors import LaceError
from concurrency.report import (
    NotebookError,
    add_report_parser,
    build_report,
    execute_notebook,
    find_notebooks,
    read_notebook,
    run_notebook,
    run_report,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
NOTEBOOKS = find_notebooks(NOTEBOOKS_DIR)
SYNC_HINT = "run `jupytext --sync notebooks/*.py` (notebooks/jupytext.toml pairs them)"


def _cells(path: Path) -> list[tuple[str, str]]:
    """(cell type, source) of every cell, as jupytext reads the file."""
    return [(cell.cell_type, cell.source) for cell in jupytext.read(path).cells]


def _write_script(folder: Path, name: str, *cells: str) -> Path:
    """Write a jupytext percent script whose code cells are `cells`; return its path."""
    path = folder / name
    path.write_text("".join(f"# %%\n{cell}\n\n" for cell in cells), encoding="utf-8")
    return path


def _stdout(nb: nbformat.NotebookNode, index: int) -> str:
    """All stdout text that code cell `index` of an executed notebook printed."""
    outputs = nb.cells[index].outputs
    return "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")


def test_at_least_one_notebook_exists() -> None:
    """The report's main job needs notebooks; an empty folder must not pass silently."""
    assert NOTEBOOKS, f"no notebooks/NN_*.py notebooks found in {NOTEBOOKS_DIR}"


@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.name)
def test_paired_ipynb_matches_script(script: Path) -> None:
    """Each NN_*.py has an NN_*.ipynb with the same cells, so both views show the same work."""
    paired = script.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} is missing; {SYNC_HINT}"
    assert _cells(paired) == _cells(script), (
        f"{paired.name} differs from {script.name}; {SYNC_HINT}"
    )


#: Per notebook: a cell appended after the last one that prints, as JSON, the key figures the
#: notebook's prose talks about (read from the notebook's own variables), and the check of
#: those figures against the library computed here, independently of the notebook.
PROBES: dict[str, str] = {
    "01_graph_anatomy.py": (
        "g = detect_branches(gdn, 'general').regions[0]\n"
        "print(json.dumps({'fork': g.fork, 'branches': len(g.branches),"
        " 'ggml_regions': len(detect_branches(gdn, 'ggml').regions),"
        " 'ggml_attn_regions': len(detect_branches(attn, 'ggml').regions),"
        " 'ggml_attn_b4_regions': len(detect_branches(attn_b4, 'ggml').regions),"
        " 'small_hazards': len(ggml_today.hazards), 'recycled': len(recycled),"
        " 'moe_fork': shexp.fork, 'moe_branches': [b.nodes[0] for b in shexp.branches]}))"
    ),
    "02_allocator_policies.py": (
        "kinds = lambda hs: [sum(h.kind == k for h in hs) for k in ('race', 'use after reuse')]\n"
        "print(json.dumps({'hazards': {p: kinds(r.hazards) for p, r in results.items()},"
        " 'arena': {p: r.arena_bytes for p, r in results.items()},"
        " 'bound': next(iter(results.values())).lower_bound_bytes}))"
    ),
    "03_fidelity.py": (
        "print(json.dumps({'plans': len(table), 'identical': int(table['equal'].sum())"
        " if len(table) else 0, 'oracle': bool(ggml)}))"
    ),
    "04_streams_and_overlap.py": (
        "s = summary.set_index(['split', 'schedule'])\n"
        "d = llama['decode'].set_index(['batch', 'graph_opt'])\n"
        "print(json.dumps({'folder': str(folder), 'spec': str(view.path),"
        " 'medians': {f'{k[0]}|{k[1]}': [s.loc[k, 'before_median'], s.loc[k, 'after_median']]"
        " for k in s.index}, 'spans': spans, 'case': [MODEL, LAYER, BATCH],"
        " 'llama_error': {str(b): d.loc[(b, 0), 'error'] for b in (1, 8, 64)},"
        " 'prefill': {f'{r.batch}|{r.graph_opt}': [r.error, bool(r.warmup)]"
        " for r in prefill.itertuples()},"
        " 'prefill_median': prefill_summary.median_abs_error,"
        " 'prefill_misses': len(llama['prefill_misses']),"
        " 'misses': len(llama['misses']), 'findings': len(remaining_misses(view, data))}))"
    ),
    "05_dashboard.py": (
        "d = dashboard(model=MODEL, batch=BATCH, policy=POLICY, gpu=GPU, data=DATA)\n"
        "print(json.dumps({'racy': len(racy.hazards), 'safe': len(safe.hazards),"
        " 'racy_policy': racy.choice.policy, 'safe_policy': safe.choice.policy,"
        " 'dash_hazards': len(d.view.hazards), 'streams_used': d.view.streams_used,"
        " 'measured': len(d.view.measured)}))"
    ),
    "06_gpu_streams.py": (
        "print(json.dumps({'folder': str(folder), 'recorded': recorded,"
        " 'sources': [gdn.source, stack.source], 'titles': [gdn.title, stack.title],"
        " 'race_rows': len(race_frame), 'compare_rows': len(compare_frame),"
        " 'bench_rows': len(bench)}))"
    ),
}


def _check_01(found: dict) -> None:
    from concurrency.graph.branches import detect_branches
    from concurrency.graph.builders import build_graph

    gdn = build_graph("qwen3.5-27b", "gdn", "decode", 1)
    assert found["fork"] == detect_branches(gdn).regions[0].fork == "attn_norm-0"
    assert found["branches"] == 4 and found["ggml_regions"] == 0
    assert found["ggml_attn_regions"] == 1 and found["ggml_attn_b4_regions"] == 0
    # the opening's figures: ggml's plan of the small layer, and its hazards on the fork output
    from concurrency.graph.schedule import stream_schedule
    from concurrency.memory.check import check_plan
    from concurrency.memory.policies import plan_memory

    small = build_graph("tiny", "gdn", "decode", 1)
    rep = detect_branches(small)
    sched = stream_schedule(small, rep)
    hazards = check_plan(plan_memory(small, sched, rep, "sequential"), sched).hazards
    assert found["small_hazards"] == len(hazards) > 0
    on_norm = [h for h in hazards if "attn_norm-0" in (h.first_tensor, h.second_tensor)]
    assert found["recycled"] == len(on_norm) > 0
    moe = build_graph("qwen3.5-35b-a3b", "stack", "decode", 1, None, 1)
    (region,) = [r for r in detect_branches(moe).regions if r.fork == found["moe_fork"]]
    assert any("shexp" in first for first in found["moe_branches"])
    assert found["moe_branches"] == [b.nodes[0] for b in region.branches]


def _check_02(found: dict) -> None:
    from concurrency.graph.branches import detect_branches
    from concurrency.graph.builders import build_graph
    from concurrency.graph.schedule import stream_schedule
    from concurrency.memory.bound import lower_bound
    from concurrency.memory.check import check_plan
    from concurrency.memory.policies import POLICIES, STREAM_SAFE_POLICIES, plan_memory

    g = build_graph("qwen3.5-27b", "gdn", "decode", 1)
    rep = detect_branches(g)
    sched = stream_schedule(g, rep)
    assert set(found["hazards"]) == set(POLICIES)
    for name in POLICIES:
        check = check_plan(plan_memory(g, sched, rep, name), sched)
        assert found["hazards"][name] == [len(check.races), len(check.uses_after_reuse)], name
    assert all(found["hazards"][p] == [0, 0] for p in STREAM_SAFE_POLICIES)
    assert found["hazards"]["sequential"][0] > 0
    assert found["bound"] == lower_bound(g, sched, 128).bytes
    assert all(found["arena"][p] >= found["bound"] for p in STREAM_SAFE_POLICIES)


def _check_03(found: dict) -> None:
    if found["oracle"]:
        assert found["plans"] > 0 and found["identical"] == found["plans"]


def _check_04(found: dict) -> None:
    """The notebook's held-out medians are the calibrated document's rows (recomputed here
    without the library's summary), calibration lowers every median, and the timelines and the
    llama.cpp errors are the simulator's for the same cases."""
    import json
    import statistics

    from concurrency.data import load_manifest
    from concurrency.peers.predict import (
        MISS_THRESHOLD,
        predict_llama_decode,
        predict_llama_prefill,
    )
    from concurrency.peers.results import load_results
    from concurrency.recorded import recorded_timelines
    from concurrency.timing.gpus import load_gpu_spec
    from concurrency.timing.metrics import makespan_us

    folder = Path(found["folder"])
    doc = json.loads(Path(found["spec"]).read_text(encoding="utf-8"))
    rows = doc["fit"]["heldout"]
    keys = {f"{r['split']}|{r['schedule']}" for r in rows}
    assert set(found["medians"]) == keys
    for key, (before, after) in found["medians"].items():
        split, schedule = key.split("|")
        mine = [r for r in rows if (r["split"], r["schedule"]) == (split, schedule)]
        assert before == statistics.median(abs(r["before_error"]) for r in mine)
        assert after == statistics.median(abs(r["after_error"]) for r in mine)
        assert after < before, key
    spec = load_gpu_spec(found["spec"])
    model, layer, batch = found["case"]
    (rec,) = [
        t
        for t in recorded_timelines(folder)
        if (t.entry.model, t.entry.layer, t.entry.batch, t.entry.streams > 1)
        == (model, layer, batch, True)
    ]
    assert found["spans"]["measured"] == makespan_us(rec.timeline)
    assert found["spans"]["calibrated"] == makespan_us(rec.simulated(spec))
    (peers,) = [folder / e.file for e in load_manifest(folder) if e.kind == "peers"]
    decode = predict_llama_decode(spec, load_results(peers)[1], (1, 8, 64))
    for p in decode:
        if p["graph_opt"] == 0:
            assert found["llama_error"][str(p["batch"])] == p["error"]
    assert found["misses"] > 0 and found["findings"] > 0
    # prefill: every batch and GRAPH_OPT measured, the summary's median over the rows without
    # warm-up only (recomputed here from the predictions)
    prefill = predict_llama_prefill(spec, load_results(peers)[1])
    assert set(found["prefill"]) == {f"{p['batch']}|{p['graph_opt']}" for p in prefill}
    for p in prefill:
        assert found["prefill"][f"{p['batch']}|{p['graph_opt']}"] == [p["error"], p["warmup"]]
    fair = [abs(p["error"]) for p in prefill if not p["warmup"]]
    assert fair and len(fair) < len(prefill)
    assert found["prefill_median"] == statistics.median(fair)
    assert found["prefill_misses"] == sum(f > MISS_THRESHOLD for f in fair)


def _check_05(found: dict) -> None:
    from concurrency.render.explorer import Choice, explore

    assert (found["racy_policy"], found["safe_policy"]) == ("sequential", "happens_before")
    assert found["racy"] > 0 and found["safe"] == 0
    ref = explore(Choice(model="qwen3.5-27b", batch=1, policy="sequential", gpu="h100"))
    assert found["dash_hazards"] == len(ref.hazards) == found["racy"]
    assert found["streams_used"] == ref.streams_used


def _check_06(found: dict) -> None:
    """Measured where data/ holds the timeline, simulated (and saying so) where it does not;
    the race table is the recorded one or the checker's verdicts for the 27B GDN layer."""
    from concurrency.data import RACE, REPLAYS, TIMELINE, load_manifest, load_table
    from concurrency.execute.gpu.bench import bench_rows
    from concurrency.execute.gpu.cases import CaseContext, GpuCase
    from concurrency.execute.gpu.race_plans import race_subjects

    folder = Path(found["folder"])
    timelines = [e for e in load_manifest(folder) if e.kind == TIMELINE]
    assert found["recorded"] == bool(timelines)
    for layer, source, title in zip(
        ("gdn", "stack"), found["sources"], found["titles"], strict=True
    ):
        has = any(
            e.layer == layer and e.streams > 1 and e.policy == "happens_before" for e in timelines
        )
        assert source == ("measured" if has else "simulated"), layer
        assert ("measured on " in title) == has and ("simulated on " in title) == (not has)
    races = load_table(folder, RACE)
    subjects = race_subjects(CaseContext(GpuCase("qwen3.5-27b", "gdn", 1)))
    assert found["race_rows"] == (len(races) if len(races) else len(subjects))
    assert found["compare_rows"] == (len(timelines) if timelines else 4)
    replays = load_table(folder, REPLAYS).to_dict("records")
    assert found["bench_rows"] == len(bench_rows(replays, ["happens_before"]))


CHECKS = {
    "01_graph_anatomy.py": _check_01,
    "02_allocator_policies.py": _check_02,
    "03_fidelity.py": _check_03,
    "04_streams_and_overlap.py": _check_04,
    "05_dashboard.py": _check_05,
    "06_gpu_streams.py": _check_06,
}


def test_every_notebook_has_a_probe() -> None:
    """A new notebook must say which of its figures the tests check."""
    assert {p.name for p in NOTEBOOKS} == set(PROBES) == set(CHECKS)


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_headless_with_its_key_figures(script: Path) -> None:
    """Every notebook runs top to bottom in a fresh kernel, as `lace report` runs it, and the
    figures its prose relies on are the library's."""
    import json

    nb = read_notebook(script)
    nb.cells.append(nbformat.v4.new_code_cell("import json\n" + PROBES[script.name]))
    run_notebook(nb, script, timeout_s=600)
    found = json.loads(_stdout(nb, len(nb.cells) - 1))
    CHECKS[script.name](found)


@pytest.mark.notebook
@pytest.mark.slow
def test_gpu_notebook_reads_a_recording() -> None:
    """Notebook 06 on a recording (the small emulated one under tests/data): the GDN layer's
    figures are measured, the stack's (not recorded there) simulated, each saying so."""
    import json

    script = NOTEBOOKS_DIR / "06_gpu_streams.py"
    nb = read_notebook(script)
    data = ROOT / "tests" / "data" / "gpu-recording"
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    params.source = params.source.replace("DATA = None", f"DATA = {str(data)!r}")
    nb.cells.append(nbformat.v4.new_code_cell("import json\n" + PROBES[script.name]))
    run_notebook(nb, script, timeout_s=600)
    found = json.loads(_stdout(nb, len(nb.cells) - 1))
    assert found["folder"] == str(data) and found["sources"] == ["measured", "simulated"]
    _check_06(found)


@pytest.mark.notebook
def test_kernel_is_this_interpreter_in_the_notebook_folder(tmp_path: Path) -> None:
    """The kernel is this venv's Python (LACE importable) and starts in the notebook's folder."""
    script = _write_script(
        tmp_path,
        "01_where.py",
        "import os, sys\nprint(sys.executable)\nprint(os.getcwd())",
        "import concurrency.errors",
    )
    lines = _stdout(execute_notebook(script, timeout_s=60), 0).splitlines()
    assert Path(lines[0]).resolve() == Path(sys.executable).resolve()
    assert Path(lines[1]).resolve() == tmp_path.resolve()


@pytest.mark.notebook
def test_report_writes_one_html_per_notebook(tmp_path: Path) -> None:
    """build_report writes NN_name.html and the executed NN_name.ipynb for each NN_*.py only."""
    src, out = tmp_path / "nb", tmp_path / "out"
    src.mkdir()
    _write_script(src, "01_first.py", "print('first notebook ran')")
    _write_script(src, "02_second.py", "print(6 * 7)")
    _write_script(src, "helpers.py", "raise RuntimeError('not a notebook')")

    pages = build_report(src, out, timeout_s=60)

    assert [p.name for p in pages] == ["01_first.html", "02_second.html"]
    assert sorted(p.name for p in out.iterdir()) == [
        "01_first.html",
        "01_first.ipynb",
        "02_second.html",
        "02_second.ipynb",
    ]
    assert "first notebook ran" in pages[0].read_text(encoding="utf-8")
    assert "42" in _stdout(jupytext.read(out / "02_second.ipynb"), 0)


@pytest.mark.notebook
def test_failing_cell_names_notebook_cell_and_error(tmp_path: Path) -> None:
    """A failing cell gives one LaceError line naming notebook, cell and exception."""
    script = _write_script(tmp_path, "03_broken.py", "x = 1", "# check x\nraise ValueError(x)")
    with pytest.raises(LaceError) as info:
        execute_notebook(script, timeout_s=60)
    message = str(info.value)
    assert isinstance(info.value, NotebookError)
    assert "03_broken.py" in message
    assert "cell 2" in message and "# check x" in message
    assert "ValueError: 1" in message
    assert "\n" not in message and "Traceback" not in message


def test_missing_or_empty_notebooks_folder_is_an_error(tmp_path: Path) -> None:
    """No folder, or a folder without NN_*.py, is an error rather than an empty report."""
    with pytest.raises(NotebookError, match="not found"):
        build_report(tmp_path / "absent", tmp_path / "out")
    with pytest.raises(NotebookError, match=r"no .* notebooks"):
        build_report(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_report_subcommand_defaults_and_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lace report` defaults to notebooks/ and reports/; a missing folder is one stderr line."""
    parser = argparse.ArgumentParser(prog="lace")
    add_report_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report"])
    assert (args.notebooks, args.out, args.func) == (Path("notebooks"), Path("reports"), run_report)

    monkeypatch.chdir(tmp_path)
    assert run_report(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("lace: error: notebooks folder")
    assert err.count("\n") == 1 and "--notebooks" in err


def test_report_charts_render_offline(tmp_path: Path) -> None:
    """Report pages carry each chart's spec and the Vega bundle once, inline: nothing is
    loaded from a CDN (tests/test_browser.py opens such pages in Chromium offline)."""
    from concurrency.report import build_report

    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    (nb_dir / "01_chart.py").write_text(
        "# %%\nimport altair as alt\nimport pandas as pd\n\n"
        "# %%\nframe = pd.DataFrame({'x': [1, 2], 'y': [3, 4]})\n\n"
        "# %%\nalt.Chart(frame).mark_bar().encode(x='x', y='y')\n"
    )
    (page,) = build_report(nb_dir, tmp_path / "out", timeout_s=120)
    html = page.read_text()
    assert html.count('class="lace-vega"') == 1 and html.count('id="lace-vega-bundle"') == 1
    assert "<title>01_chart</title>" in html  # no heading: the file name
    for cdn in ("cdn.jsdelivr", "unpkg.com", "cdnjs", "require.js", "mathjax@", "mermaid@"):
        assert cdn not in html.lower(), cdn
    assert not re.search(r'<script[^>]+src="https?:', html)
    assert not re.search(r'<link[^>]+href="https?:', html)


def test_report_parameters_reach_the_notebooks(tmp_path: Path) -> None:
    """`--batch 4` sets BATCH in every notebook whose parameters cell defines it; an unknown
    parameter is one error naming the known ones."""
    src = tmp_path / "nb"
    src.mkdir()
    (src / "01_p.py").write_text(
        "# %% [markdown]\n# # A titled page\n\n"
        '# %% tags=["parameters"]\nBATCH = 1\nMODEL = "tiny"\n\n# %%\nprint(BATCH, MODEL)\n'
    )
    (page,) = build_report(src, tmp_path / "out", timeout_s=60, parameters={"BATCH": 4})
    nb = jupytext.read(tmp_path / "out" / "01_p.ipynb")
    assert "4 tiny" in _stdout(nb, len(nb.cells) - 1)
    assert "<title>A titled page</title>" in page.read_text()
    with pytest.raises(NotebookError, match=r"GPU.*BATCH, MODEL"):
        build_report(src, tmp_path / "out2", parameters={"GPU": "h200"})


@pytest.mark.notebook
def test_slides_need_no_network(tmp_path: Path) -> None:
    """`lace slides` writes one reveal.js deck per notebook with reveal.js inlined: no CDN;
    each Markdown cell starts a slide."""
    from concurrency.slides import build_slides

    src = tmp_path / "nb"
    src.mkdir()
    (src / "01_deck.py").write_text(
        "# %% [markdown]\n# # First\n\n# %%\nprint('one')\n\n"
        "# %% [markdown]\n# ## Second\n\n# %%\nprint('two')\n"
    )
    _write_script(src, "02_other.py", "print('not asked for')")
    (deck,) = build_slides(src, tmp_path / "slides", timeout_s=60, only=["01"])
    html = deck.read_text()
    assert deck.name == "01_deck.slides.html" and "<title>First · slides</title>" in html
    assert html.count("<section") >= 2 and "Reveal.initialize" in html
    assert not re.search(r'<script[^>]+src="https?:', html)
    assert not re.search(r'<link[^>]+href="https?:', html)
    for cdn in ("unpkg.com", "cdn.jsdelivr", "require.js", "mathjax@"):
        assert cdn not in html.lower(), cdn
    with pytest.raises(NotebookError, match="no notebook matches"):
        build_slides(src, tmp_path / "none", only=["09"])
