"""`lace sweep` and `concurrency.sweep`: grids and ids, rows checked against the library,
one context per group, failures recorded, resumable files, the results file's checks, Dask
against one process row for row, the CLI's output and its errors.

The Dask tests use small local clusters (2 workers) that are always shut down."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from concurrency import __version__
from concurrency.cli import main
from concurrency.data import FIELDS
from concurrency.errors import LaceError, MissingToolError, UnknownNameError
from concurrency.memory.policies import POLICIES
from concurrency.sweep import (
    VOLATILE_COLUMNS,
    SweepCase,
    SweepFileError,
    expand_grid,
    group_by_context,
    load_results,
    read_table,
    run_case,
    run_group,
    run_sweep,
)
from concurrency.sweep import work as sweep_work
from concurrency.sweep.store import COLUMN_NAMES, MANIFEST_FIELDS_NOT_APPLICABLE, rows_to_table

REPO = Path(__file__).resolve().parents[1]
needs_dask = pytest.mark.skipif(
    importlib.util.find_spec("distributed") is None,
    reason="Dask's distributed is not installed (pip install 'dask[distributed]')",
)
#: tiny: single GDN layers and a 4-layer stack (engine flow), 2 batches, 2 policies, 2 GPUs.
GRID = {
    "layer_kinds": ["gdn", "stack"],
    "layers": [4],
    "batches": [1, 2],
    "policies": ["happens_before", "sequential"],
    "gpus": ["h100", "h200"],
}
CLI_GRID = ["--models", "tiny", "--layer-kinds", "gdn", "stack", "--layers", "4", "9"]


def lace(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m concurrency ARGV` in a fresh interpreter that loads this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "concurrency", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
    )


def stable(frame):  # type: ignore[no-untyped-def]
    """A results frame without the volatile columns, sorted by id, for comparisons."""
    return frame.drop(columns=list(VOLATILE_COLUMNS)).sort_values("id").reset_index(drop=True)


class Spy:
    """Counts the cases `run_group` is given (and may stop the sweep at a chosen call)."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.cases = 0
        self.calls = 0
        self.interrupt_at = interrupt_at
        self.real = sweep_work.run_group

    def __call__(self, cases, command=""):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        self.cases += len(cases)
        return self.real(cases, command)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    s = Spy()
    monkeypatch.setattr(sweep_work, "run_group", s)
    return s


@pytest.fixture(scope="module")
def dask_client() -> Iterator[object]:
    """A local cluster of 2 worker processes for this module, always shut down."""
    distributed = pytest.importorskip("distributed")
    import logging

    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    try:
        client = distributed.Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


# ----------------------------------------------------------------------------- grids and ids
def test_grid_multiplies_only_the_axes_that_apply() -> None:
    cases = expand_grid(
        ["tiny"],
        layer_kinds=["gdn", "stack"],
        layers=[2, 4],
        modes=["decode", "prefill"],
        tokens=[8, 16],
        batches=[1, 2],
        policies=["happens_before"],
        gpus=["h100", "h100-sxm", "H200"],  # an alias and its name are one GPU
    )
    # gdn: (decode + 2 prefill token counts) × 2 batches × 2 GPUs; stack: × 2 depths.
    assert len(cases) == 3 * 2 * 2 + 2 * 3 * 2 * 2
    assert len({c.id for c in cases}) == len(cases)
    assert {c.gpu for c in cases} == {"h100-sxm", "h200"}
    assert {c.layers for c in cases if c.layer == "gdn"} == {1}
    assert {c.tokens for c in cases if c.mode == "decode"} == {1}
    assert {c.flow for c in cases if c.layer == "stack"} == {"engine"}
    assert {c.flow for c in cases if c.layer == "gdn"} == {"graph"}
    # the cases of one context are adjacent, so a group is a run of consecutive cases
    seen: list[str] = []
    for c in cases:
        if not seen or seen[-1] != c.context_id:
            assert c.context_id not in seen
            seen.append(c.context_id)
    assert len(group_by_context(cases)) == len(seen) == 3 * 2 + 2 * 3 * 2


def test_all_policies_and_defaults() -> None:
    cases = expand_grid(["tiny"], layer_kinds=["stack"])
    assert [c.policy for c in cases] == list(POLICIES)
    assert {c.layers for c in cases} == {4}  # all of tiny's layers
    assert cases[0] == SweepCase("tiny", "stack", policy=cases[0].policy)
    assert cases[0].id == SweepCase("TINY", "stack", 4, policy=cases[0].policy, gpu="H100").id


def test_case_ids_are_the_same_in_another_process() -> None:
    code = (
        "from concurrency.sweep import expand_grid\n"
        "print(' '.join(c.id for c in expand_grid(['tiny', 'qwen3.5-9b'], "
        "layer_kinds=['gdn', 'stack'], batches=[1, 4], gpus=['h100', 'h200'])))\n"
    )
    ids = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        ids.append(done.stdout.split())
    here = [
        c.id
        for c in expand_grid(
            ["tiny", "qwen3.5-9b"],
            layer_kinds=["gdn", "stack"],
            batches=[1, 4],
            gpus=["h100", "h200"],
        )
    ]
    assert ids[0] == ids[1] == here
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in here)


def test_case_id_changes_with_every_field_and_the_config(tmp_path: Path) -> None:
    base = SweepCase("tiny", "stack", 4, batch=2, policy="happens_before", gpu="h100")
    changes = {
        "model": "qwen3.5-0.8b",
        "layer": "attn",
        "layers": 2,
        "mode": "prefill",
        "batch": 3,
        "policy": "sequential",
        "gpu": "h200",
        "max_streams": 2,
        "flow": "graph",
        "detector": "ggml",
        "n_ctx": 1024,
        "n_ubatch": 256,
        "alignment": 32,
        "launch": "eager",
        "weight_bytes_per_param": 0.6,
    }
    assert set(changes) | {"tokens", "config"} == {f.name for f in dataclasses.fields(SweepCase)}
    for name, value in changes.items():
        other = dataclasses.replace(base, **{name: value}, config=None)
        assert other.id != base.id, name
    prefill = SweepCase("tiny", mode="prefill")
    assert dataclasses.replace(prefill, tokens=8).id != prefill.id
    # a config file: its content is part of the id, so an edited file makes new cases
    config = base.config.to_dict()  # type: ignore[union-attr]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(config))
    first = SweepCase(str(path), "stack", 4)
    path.write_text(json.dumps({**config, "n_ff": 768}))
    assert SweepCase(str(path), "stack", 4).id != first.id


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"policies": ["lru"]}, UnknownNameError, "unknown policy 'lru'"),
        ({"gpus": ["v100"]}, UnknownNameError, "unknown GPU 'v100'"),
        ({"layer_kinds": ["mamba"]}, UnknownNameError, "unknown layer kind 'mamba'"),
        ({"batches": []}, LaceError, "batches is empty"),
        ({"batches": [0]}, LaceError, "batch must be a positive integer"),
        ({"gpus": "h100"}, LaceError, "must be a list"),
    ],
)
def test_bad_grid_values_raise_before_any_case_runs(kwargs, error, needle) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=needle):
        expand_grid(["tiny"], **kwargs)


def test_an_unknown_model_is_named() -> None:
    with pytest.raises(UnknownNameError, match="unknown model 'qwen9'"):
        expand_grid(["tiny", "qwen9"])


# ----------------------------------------------------------------------------- the rows
def test_row_matches_the_library_and_has_the_manifest_fields() -> None:
    """A row's figures are those of compare_policies and compare_streams run directly."""
    from concurrency.graph.branches import detect_branches
    from concurrency.graph.builders import build_graph
    from concurrency.graph.schedule import stream_schedule
    from concurrency.memory.compare import compare_policies
    from concurrency.timing.stream_study import compare_streams

    case = SweepCase("tiny", "stack", 4, batch=2, policy="interleave", gpu="h200")
    row = run_case(case, command="lace sweep --models tiny")
    assert row["status"] == "ok" and row["error"] == ""
    graph = build_graph("tiny", "stack", "decode", 2, None, 4, n_ctx=case.n_ctx)
    report = detect_branches(graph)
    schedule = stream_schedule(graph, report)
    [want] = compare_policies(graph, schedule, report, ["interleave"], flow="engine")
    sim = compare_streams(graph, "h200").row()
    assert row["arena_bytes"] == want.arena_bytes
    assert row["lower_bound_bytes"] == want.lower_bound_bytes
    assert row["buffer_bytes"] == want.buffer_bytes
    assert row["races"] == len(want.races) > 0  # interleave races on a stack
    assert row["uses_after_reuse"] == len(want.uses_after_reuse)
    assert json.loads(str(row["hazards_by_site"])) == dict(want.sites)
    assert row["plan_source"] == want.source
    assert row["streams"] == schedule.n_streams == sim["streams"]
    for key in ("serial_us", "parallel_us", "critical_path_us", "speedup", "overlap_ratio"):
        assert row[key] == pytest.approx(sim[key]), key
    # the data manifest's fields that apply, and what they hold for a simulated row
    applicable = set(FIELDS) - set(MANIFEST_FIELDS_NOT_APPLICABLE)
    assert applicable <= set(row) and applicable <= set(COLUMN_NAMES)
    assert row["device"] == "h200" and row["source"] == "simulated"
    assert row["command"] == "lace sweep --models tiny" and row["lace_version"] == __version__
    assert (row["model"], row["layer"], row["batch"], row["tokens"]) == ("tiny", "stack", 2, 1)
    assert set(row) <= set(COLUMN_NAMES)


def test_a_group_builds_its_context_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every policy and GPU of one graph: one graph build, one detection, one planning call
    for all policies, one simulation per GPU."""
    from concurrency.graph import branches, builders
    from concurrency.memory import compare
    from concurrency.timing import stream_study

    calls: dict[str, list[object]] = {"build": [], "detect": [], "plan": [], "simulate": []}

    def spying(name, module, attr):  # type: ignore[no-untyped-def]
        real = getattr(module, attr)

        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls[name].append(args[3] if name == "plan" else args[1] if args[1:] else None)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, attr, wrapper)

    spying("build", builders, "build_graph")
    spying("detect", branches, "detect_branches")
    spying("plan", compare, "compare_policies")
    spying("simulate", stream_study, "compare_streams")
    cases = expand_grid(["tiny"], batches=[2], policies=["all"], gpus=["h100", "h200", "a100"])
    rows = run_group(cases)
    assert len(rows) == len(POLICIES) * 3 and all(r["status"] == "ok" for r in rows)
    assert len(calls["build"]) == 1 and len(calls["detect"]) == 1
    assert calls["plan"] == [list(POLICIES)]
    assert sorted(map(str, calls["simulate"])) == ["a100", "h100-sxm", "h200"]
    assert [r["id"] for r in rows] == [c.id for c in cases]


def test_a_failing_policy_loses_only_its_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = expand_grid(["tiny"], policies=["all"], gpus=["h100"])
    clean = {r["policy"]: r for r in run_group(cases)}

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("planted failure")

    monkeypatch.setitem(POLICIES, "interleave", broken)
    rows = {r["policy"]: r for r in run_group(cases)}
    assert rows["interleave"]["status"] == "error"
    assert rows["interleave"]["error"] == "RuntimeError: planted failure"
    assert "arena_bytes" not in rows["interleave"]  # no plan: its figures stay empty
    assert rows["interleave"]["serial_us"] == clean["interleave"]["serial_us"]  # simulated
    for name, row in rows.items():
        if name != "interleave":
            assert row["status"] == "ok"
            assert row["arena_bytes"] == clean[name]["arena_bytes"]
            assert row["races"] == clean[name]["races"]


def test_group_takes_one_context() -> None:
    a, b = SweepCase("tiny", batch=1), SweepCase("tiny", batch=2)
    with pytest.raises(LaceError, match="one context"):
        run_group([a, b])


# ----------------------------------------------------------------------------- sweeps and files
def test_an_impossible_case_is_an_error_row_and_the_others_finish(tmp_path: Path) -> None:
    cases = expand_grid(["tiny"], layer_kinds=["stack"], layers=[4, 9], policies=["sequential"])
    out = tmp_path / "s.parquet"
    summary = run_sweep(cases, out, backend="process")
    assert (summary.ran, summary.ok, summary.errors) == (2, 1, 1)
    assert summary.failures == (
        ("ConfigError: tiny has 4 layers; got layers=9", 1, cases[1].label),
    )
    frame = load_results(out).set_index("layers")
    assert frame.loc[9, "status"] == "error" and "has 4 layers" in frame.loc[9, "error"]
    assert frame.loc[4, "status"] == "ok" and frame.loc[4, "arena_bytes"] > 0


def test_rerun_skips_what_the_file_holds(tmp_path: Path, spy: Spy) -> None:
    out = tmp_path / "s.parquet"
    cases = expand_grid(["tiny"], **GRID)
    first = run_sweep(cases, out, backend="process")
    assert spy.cases == first.ran == len(cases) == 16 and first.skipped == 0
    before = load_results(out)
    stamp = out.stat().st_mtime_ns
    again = run_sweep(cases, out, backend="process")
    assert spy.cases == 16 and (again.ran, again.skipped, again.ok) == (0, 16, 16)
    assert out.stat().st_mtime_ns == stamp  # nothing new: the file is not rewritten
    wider = expand_grid(["tiny"], **{**GRID, "batches": [1, 2, 4]})
    grown = run_sweep(wider, out, backend="process")
    assert spy.cases == 16 + 8 and (grown.ran, grown.skipped) == (8, 16)
    after = load_results(out)
    assert len(after) == 24
    kept = stable(after[after["id"].isin(before["id"])])
    assert kept.equals(stable(before))  # old rows kept as they were


def test_failed_cases_are_retried_only_when_asked(tmp_path: Path, spy: Spy) -> None:
    out = tmp_path / "s.parquet"
    cases = expand_grid(["tiny"], layer_kinds=["stack"], layers=[4, 9], policies=["sequential"])
    run_sweep(cases, out, backend="process")
    assert spy.cases == 2
    assert run_sweep(cases, out, backend="process").ran == 0
    retried = run_sweep(cases, out, backend="process", rerun_failed=True)
    assert retried.ran == 1 and spy.cases == 3 and retried.errors == 1
    assert len(load_results(out)) == 2  # the retried row replaced the old one


def test_an_interrupted_sweep_keeps_what_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "s.parquet"
    cases = expand_grid(["tiny"], **GRID)  # 4 groups of 4 cases
    spy = Spy(interrupt_at=3)
    monkeypatch.setattr(sweep_work, "run_group", spy)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cases, out, backend="process", checkpoint_s=3600)
    assert len(load_results(out)) == 8  # two groups finished before the interrupt
    resumed = Spy()
    monkeypatch.setattr(sweep_work, "run_group", resumed)
    summary = run_sweep(cases, out, backend="process")
    assert resumed.cases == summary.ran == 8 and summary.skipped == 8 and summary.ok == 16
    frame = load_results(out)
    assert list(frame["id"])[8:] == [c.id for c in cases if c.id not in set(frame["id"][:8])]


def test_results_file_is_checked_before_anything_runs(tmp_path: Path, spy: Spy) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from concurrency.timing.simulate import simulate

    cases = expand_grid(["tiny"], policies=["sequential"])
    good = tmp_path / "good.parquet"
    run_sweep(cases, good, backend="process")
    table = pq.read_table(good)
    meta = table.schema.metadata
    files = {
        "garbage.parquet": b"PAR1 this is not parquet",
        "timeline.parquet": None,  # a LACE timeline: Parquet, but another schema
        "plain.parquet": pa.table({"x": [1, 2]}),
        "v0.parquet": table.replace_schema_metadata(
            {**meta, b"lace.sweep.schema": b"lace-sweep/0"}
        ),
        "cols.parquet": table.drop_columns(["races"]),
        "type.parquet": table.set_column(
            table.schema.get_field_index("races"), "races", pa.array(["x"] * len(table))
        ),
        "dups.parquet": pa.concat_tables([table, table]),
    }
    needles = {
        "garbage.parquet": "is not a readable Parquet file",
        "timeline.parquet": "is not a LACE sweep results file",
        "plain.parquet": "is not a LACE sweep results file",
        "v0.parquet": "schema 'lace-sweep/0', not 'lace-sweep/1'",
        "cols.parquet": "lacks the columns ['races']",
        "type.parquet": "column 'races' is string, expected int64",
        "dups.parquet": "repeated ids",
    }
    from concurrency.graph.branches import detect_branches
    from concurrency.graph.builders import build_graph
    from concurrency.graph.schedule import stream_schedule

    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is None:
            g = build_graph("tiny")
            simulate(g, stream_schedule(g, detect_branches(g)), "h100").save(path)
        else:
            pq.write_table(content, path)
        stamp = path.read_bytes()
        with pytest.raises(SweepFileError, match=re.escape(needles[name])) as info:
            run_sweep(cases, path, backend="process")
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        assert path.read_bytes() == stamp  # never overwritten
    assert spy.cases == 1  # only the good sweep ran anything
    assert len(read_table(good)) == 1


def test_rows_of_every_status_fit_the_schema() -> None:
    ok = run_case(SweepCase("tiny", "stack", 4))
    bad = run_case(SweepCase("tiny", "stack", 9))
    table = rows_to_table([ok, bad])
    assert table.column_names == list(COLUMN_NAMES)
    assert table.column("status").to_pylist() == ["ok", "error"]
    assert table.column("arena_bytes").to_pylist()[1] is None
    with pytest.raises(LaceError, match="lacks"):
        rows_to_table([{**ok, "surprise": 1}])


# ----------------------------------------------------------------------------- Dask
def test_dask_rows_equal_one_process_rows(tmp_path: Path, dask_client: object) -> None:
    """The same grid, planted failure included, in one process and on 2 Dask workers: the
    same rows apart from the volatile columns."""
    cases = expand_grid(["tiny"], **{**GRID, "layers": [4, 9]})
    here = run_sweep(cases, tmp_path / "one.parquet", backend="process")
    there = run_sweep(cases, tmp_path / "dask.parquet", client=dask_client)
    assert there.backend == "Dask client's cluster" and there.workers == 2
    assert (here.ok, here.errors) == (there.ok, there.errors) == (16, 8)
    one, dask = load_results(tmp_path / "one.parquet"), load_results(tmp_path / "dask.parquet")
    assert list(one["id"]) == list(dask["id"]) == [c.id for c in cases]  # the grid's order
    assert stable(one).equals(stable(dask))
    assert set(dask["worker"]) - set(one["worker"]) == set(dask["worker"])  # ran elsewhere


def test_a_running_scheduler_is_reached_by_its_address(tmp_path: Path, dask_client: object) -> None:
    address = dask_client.scheduler.address  # type: ignore[attr-defined]
    cases = expand_grid(["tiny"], **GRID)
    summary = run_sweep(cases, tmp_path / "s.parquet", scheduler=address, scheduler_timeout_s=30)
    assert summary.backend == f"Dask cluster at {address}" and summary.workers == 2
    assert summary.ok == len(cases)
    workers = set(load_results(tmp_path / "s.parquet")["worker"])
    assert f"{socket.gethostname()}:{os.getpid()}" not in workers  # ran on the workers
    with pytest.raises(LaceError, match="workers applies to a local cluster"):
        run_sweep(cases, tmp_path / "t.parquet", scheduler=address, workers=2)


def test_dask_backend_without_distributed_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingToolError, match=r"pip install 'dask\[distributed\]'"):
        run_sweep(expand_grid(["tiny"], policies=["sequential"]), tmp_path / "s.parquet")
    # the process backend needs no Dask
    assert (
        run_sweep(
            expand_grid(["tiny"], policies=["sequential"]),
            tmp_path / "s.parquet",
            backend="process",
        ).ok
        == 1
    )


def test_core_imports_no_dask() -> None:
    code = (
        "import sys\n"
        "import concurrency.sweep\n"
        "import concurrency.cli.cmd_sweep\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- the CLI
def test_cli_json_summary_and_exit_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.parquet"
    argv = ["sweep", *CLI_GRID, "--policies", "sequential", "--in-process", "--out", str(out)]
    code = main([*argv, "--format", "json"])
    stdout, _ = capsys.readouterr()
    doc = json.loads(stdout)
    assert code == 1  # a case failed
    assert doc["cases"] == doc["ran"] == 3 and (doc["ok"], doc["errors"]) == (2, 1)
    assert doc["backend"] == "one process" and doc["out"] == str(out)
    assert doc["failures"][0]["error"] == "ConfigError: tiny has 4 layers; got layers=9"
    frame = load_results(out)
    assert set(frame["command"]) == {
        "lace sweep --models tiny --layer-kinds gdn stack --layers 4 9 --modes decode "
        "--batches 1 --policies sequential --gpus h100 --max-streams 8 --detector general "
        "--n-ctx 512 --n-ubatch 512 --alignment 128 --launch graph --weight-bytes 2"
    }
    code = main([*argv, "-q"])
    stdout, stderr = capsys.readouterr()
    assert code == 1 and stderr == ""
    assert "3 cases in this grid, 2 finished, 1 failed" in stdout
    assert "nothing to run" in stdout and "has 4 layers" in stdout


@needs_dask
def test_cli_local_cluster_prints_only_json(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    done = lace(
        "sweep", "--models", "tiny", "--layer-kinds", "gdn", "stack", "--layers", "4",
        "--batches", "1", "2", "--workers", "2", "--out", str(out), "--format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["backend"] == "local Dask cluster" and doc["workers"] == 2
    assert doc["ran"] == doc["ok"] == 2 * 2 * len(POLICIES)
    assert "Traceback" not in done.stderr
    assert len(load_results(out)) == doc["ran"]


@needs_dask
def test_cli_bench_compares_one_process_with_a_cluster() -> None:
    done = lace(
        "sweep", "--models", "tiny", "--layer-kinds", "gdn", "stack", "--layers", "4",
        "--policies", "sequential", "happens_before", "--bench", "--workers", "2",
        "--format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    one, cluster = doc["runs"]
    assert one["backend"] == "one process" and one["workers"] == 1 and one["speedup"] == 1
    assert cluster["backend"] == "local Dask cluster" and cluster["workers"] == 2
    assert one["cases"] == cluster["cases"] == doc["cases"] == 4
    assert cluster["cases_per_s"] > 0 and one["cases_per_s"] > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"not parquet at all")
    out = ["--out", str(tmp_path / "s.parquet")]
    cases = [
        (["--models", "tiny", "--workers", "0"], "positive integer"),
        (["--models", "tiny", "--policies", "lru"], "invalid choice: 'lru'"),
        (["--models", "tiny", "--gpus", "v100", *out], "unknown GPU 'v100'"),
        (["--models", "tiny", "qwen9", *out], "unknown model 'qwen9'"),
        (["--models", "tiny", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not allowed"),
        (["--models", "tiny", "--in-process", "--out", str(corrupt)], "not a readable Parquet"),
        (["--models", "tiny", "--out", str(tmp_path / "s.csv")], "a .parquet file"),
        (["--models", "tiny", "--out", str(tmp_path / "no" / "s.parquet")], "does not exist"),
        (["--models", "tiny", "--bench", "--in-process"], "--bench compares"),
        ([], "required: --models"),
    ]  # fmt: skip
    unreachable = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    if importlib.util.find_spec("distributed") is not None:
        needle = "cannot reach the Dask scheduler"
    else:
        needle = "pip install 'dask[distributed]'"
    cases.append(
        (["--models", "tiny", *out, "--scheduler", unreachable, "--scheduler-timeout", "1"], needle)
    )
    for argv, needle in cases:
        done = lace("sweep", *argv, "-q", timeout=60)  # -q: no progress line on a slow day
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.startswith("lace: error: "), (argv, done.stderr)
        assert needle in done.stderr, (argv, done.stderr)
        assert done.stderr.count("\n") == 1, (argv, done.stderr)
        assert done.stdout == "", argv
    assert not (tmp_path / "s.parquet").exists()


# ----------------------------------------------------------------------------- progress
def test_meter_shows_count_rate_and_time_left() -> None:
    import io

    from concurrency.cli.progress import LOG_INTERVAL_S, Meter, Progress

    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, delay_s=0, tty=False)
    meter = Meter(progress, "sweep", 40, "cases", clock=lambda: now[0])
    for _ in range(10):
        now[0] += 0.5
        meter.advance()
    lines = stream.getvalue().splitlines()
    # a log gets the first line and then one per LOG_INTERVAL_S, not one per case
    assert lines[0] == "lace: sweep [--------------------] 0/40 cases …"
    assert lines[1] == "lace: sweep [--------------------] 1/40 cases, 2/s, 20 s left …"
    assert len(lines) == 2 and LOG_INTERVAL_S > 10 * 0.5
    now[0] += LOG_INTERVAL_S
    meter.advance(30)
    assert stream.getvalue().splitlines()[-1] == (
        "lace: sweep [####################] 40/40 cases, 2.67/s …"
    )
    assert meter.text(now[0] - LOG_INTERVAL_S).startswith("sweep [####################]")
    tty = io.StringIO()
    on_terminal = Meter(Progress(tty, delay_s=0, tty=True), "sweep", 4, "", clock=lambda: now[0])
    for _ in range(4):
        now[0] += 1
        on_terminal.advance()
    assert tty.getvalue().count("\r\x1b[K") == 5  # every update redrawn in place
    assert tty.getvalue().endswith("sweep [####################] 4/4, 1/s …")
