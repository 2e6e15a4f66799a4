"""The GPU executor's pure side, checked without a GPU: the launch plan addresses every planned
tensor at arena + its plan offset, launches touch only the node's own tensors, streams and
waits are the schedule's, every kernel named exists in its source file; weights are cast as
documented; and without CuPy, nvmath-python, cupti-python or a GPU every entry point raises one
clear line naming the fix."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
from gpu_cases import layer_graph, op_graph, planned

from concurrency.errors import LaceError, MissingToolError
from concurrency.execute.gpu import (
    KernelLaunch,
    MatmulLaunch,
    build_launch_plan,
    cast_weights,
    reference_inputs,
    tolerance,
)
from concurrency.execute.gpu import kernels as kernel_files
from concurrency.execute.gpu.launch import (
    ARENA,
    GDN_FORMS,
    GEMV_MAX_COLUMNS,
    SCRATCH,
    STORAGE_BYTES,
    LaunchPlan,
)
from concurrency.execute.gpu.storage import from_bf16_bits, round_to, to_bf16_bits
from concurrency.memory.engine_flow import engine_flow_plan
from concurrency.memory.policies import POLICIES

REPO = Path(__file__).resolve().parents[1]
GRAPHS = [
    ("tiny", "gdn", "decode", 2, None),
    ("tiny", "attn", "prefill", 2, 8),
    ("27b-scaled", "stack", "decode", 4, None),
    ("27b-scaled", "stack", "prefill", 1, 65),
    ("moe-scaled", "stack", "decode", 2, None),
    ("next-scaled", "stack", "prefill", 1, 8),
]


def _ranges(lp: LaunchPlan, node: str) -> list[tuple[str, int, int]]:
    """(buffer, start, end) of the tensors node `node` may touch: itself and its sources."""
    g = lp.graph
    out = []
    for name in (node, *g[node].srcs):
        ref = lp.tensors.get(name)
        if ref is not None and ref.nbytes:
            out.append((ref.ptr.buffer, ref.ptr.offset_bytes, ref.ptr.offset_bytes + ref.nbytes))
    return out


@pytest.mark.parametrize("case", GRAPHS, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("weight_dtype", ["f32", "bf16"])
def test_launch_plan_follows_plan_and_schedule(case, weight_dtype: str) -> None:
    graph = layer_graph(*case)
    for policy in POLICIES:  # unsafe plans too: running them is how races show on the GPU
        schedule, plan = planned(graph, policy)
        for matmul in ("auto", "nvmath", "custom"):
            lp = build_launch_plan(graph, schedule, plan, weight_dtype=weight_dtype, matmul=matmul)
            assert lp.buffers[ARENA].nbytes == plan.arena_bytes
            # every planned tensor (and view of one) at arena + its planned offset
            for name, t in graph.tensors.items():
                addr = plan.address(graph, name)
                if t.is_empty:
                    assert name not in lp.tensors
                elif addr is not None:
                    ref = lp.tensors[name]
                    assert (ref.ptr.buffer, ref.ptr.offset_bytes) == (ARENA, addr), name
                    assert ref.strides_bytes == t.strides_bytes
                else:
                    base = graph.base(name)
                    assert lp.tensors[name].ptr.buffer.endswith(f":{base}"), name
            # the schedule's streams and waits, an event wherever someone waits
            awaited = {j for w in schedule.waits for j in w}
            assert [n.stream for n in lp.nodes] == list(schedule.stream)
            assert [n.waits for n in lp.nodes] == [tuple(w) for w in schedule.waits]
            assert {n.index for n in lp.nodes if n.record} == awaited
            # every pointer a launch passes lies inside a tensor the node touches (or its scratch)
            for node in lp.nodes:
                allowed = _ranges(lp, node.node)
                for launch in node.launches:
                    for ptr in launch.pointers():
                        if ptr.buffer == SCRATCH:
                            continue
                        assert any(
                            b == ptr.buffer and lo <= ptr.offset_bytes < hi for b, lo, hi in allowed
                        ), (node.node, ptr)
            # projection paths as documented
            mm = lp.matmuls()
            if matmul == "custom":
                assert not mm
            if matmul == "nvmath":
                assert len(mm) == sum(
                    graph[n].op == "MUL_MAT" for n in graph.nodes if not graph[n].is_empty
                )
            if matmul == "auto":  # cuBLASLt only past the GEMV's column limit
                assert all(m.n > GEMV_MAX_COLUMNS for m in mm)


def test_scratch_regions_are_private_and_outside_the_arena() -> None:
    graph = layer_graph("27b-scaled", "stack", "prefill", 1, 65)
    schedule, plan = planned(graph, "happens_before")
    lp = build_launch_plan(graph, schedule, plan, weight_dtype="bf16", matmul="nvmath")
    spans = []
    for node in lp.nodes:
        for launch in node.launches:
            if isinstance(launch, MatmulLaunch):
                assert launch.x.buffer == SCRATCH and launch.d.buffer == ARENA
                spans.append(
                    (launch.x.offset_bytes, launch.x.offset_bytes + launch.n * launch.k * 2)
                )
    spans.sort()
    assert spans and all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    assert spans[-1][1] <= lp.buffers[SCRATCH].nbytes


def test_every_named_kernel_exists_in_its_source() -> None:
    defined = {src: kernel_files.kernel_names(src) for src in kernel_files.sources()}
    seen = set()
    for case in GRAPHS:
        graph = layer_graph(*case)
        schedule, plan = planned(graph, "happens_before")
        for wd in ("f32", "f16", "bf16"):
            for matmul in ("auto", "custom"):
                for gdn in GDN_FORMS:
                    lp = build_launch_plan(
                        graph, schedule, plan, weight_dtype=wd, matmul=matmul, gdn=gdn
                    )
                    for source, kernel in lp.kernels():
                        assert kernel in defined[source], (source, kernel)
                        seen.add(kernel)
    assert {
        "gdn_recurrent_v1",
        "gdn_recurrent_v1_l16",
        "gdn_recurrent_v1_l32",
        "gdn_chunk_prep_d32",
        "gdn_chunk_state_d32",
        "gdn_chunk_out_d32",
        "gdn_chunk_prep_d128_tf32",
        "flash_attn_ext_f16_d1",
        "mul_mat_id_bf16",
        "argsort_desc_f32_i32",
    } <= seen


def test_weight_casts_and_rounding() -> None:
    graph = layer_graph("moe-scaled", "stack", "decode", 1)
    cast = cast_weights(graph)
    assert "token_embd.weight" in cast and "blk.0.attn_qkv.weight" in cast
    assert "blk.0.ffn_up_exps.weight" in cast
    assert not any(
        n.endswith(("norm.weight", "ssm_a", "ssm_dt.bias", "ssm_conv1d.weight")) for n in cast
    )
    schedule, plan = planned(graph, "happens_before")
    f32 = build_launch_plan(graph, schedule, plan, weight_dtype="f32")
    half = build_launch_plan(graph, schedule, plan, weight_dtype="bf16")
    for name in cast:
        assert half.buffers[f"weight:{name}"].nbytes * 2 == f32.buffers[f"weight:{name}"].nbytes
        assert half.tensors[name].dtype == "bf16"
    values = reference_inputs(graph, 0, "bf16")
    for name in cast:  # already bf16 values: rounding again changes nothing
        assert np.array_equal(round_to(values[name], "bf16"), values[name])
    assert all(
        np.array_equal(round_to(values[n], "f16"), values[n])
        for n in graph.leafs
        if graph[n].dtype == "f16"
    )


def test_rounding_excess_accepts_round_to_nearest_only() -> None:
    """The check on the device's activation casts: round to nearest passes (≤ 1) in both
    types; truncation, the wrong type or a non-finite cast fails."""
    from concurrency.execute.gpu.check import rounding_excess

    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, 5000) * np.exp(rng.normal(0.0, 2.0, 5000))
    x[:4] = [0.0, 1e-30, -3e-9, 3.0]
    for dtype in ("f16", "bf16"):
        assert 0.5 < rounding_excess(x, round_to(x, dtype), dtype) <= 1.0
    bits = (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    assert rounding_excess(x, from_bf16_bits(bits), "bf16") > 1.5  # truncation
    assert rounding_excess(x, round_to(x, "bf16"), "f16") > 4.0  # bf16 where f16 was due
    assert rounding_excess(x, np.where(x > 2.0, np.inf, x), "bf16") == np.inf


def test_bf16_rounding_is_to_nearest_even() -> None:
    x = np.array(
        [1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-7, -2.5, np.inf, np.nan], dtype=np.float32
    )
    bits = to_bf16_bits(x)
    back = from_bf16_bits(bits)
    assert back[0] == 1.0 and back[1] == 1.0  # tie → even
    assert back[2] == 1.0 + 2**-6  # tie → even (up)
    assert back[3] == 1.0 + 2**-7 and back[4] == -2.5 and np.isinf(back[5]) and np.isnan(back[6])


def test_engine_flow_plan_lowers() -> None:
    from concurrency.graph.branches import detect_branches
    from concurrency.graph.schedule import stream_schedule

    graph = layer_graph("tiny", "stack", "decode", 2)
    report = detect_branches(graph)
    schedule = stream_schedule(graph, report)
    flow = engine_flow_plan(graph, schedule, report, "happens_before", 128)
    lp = build_launch_plan(graph, schedule, flow.plan)
    assert lp.buffers[ARENA].nbytes == flow.buffer_bytes
    for name in graph.planned:
        if name in lp.tensors:
            assert lp.tensors[name].ptr.offset_bytes == flow.plan.address(graph, name)


def test_bad_requests_are_one_clear_error() -> None:
    graph = layer_graph("tiny", "gdn", "decode", 1)
    schedule, plan = planned(graph, "happens_before")
    with pytest.raises(LaceError, match="weight_dtype"):
        build_launch_plan(graph, schedule, plan, weight_dtype="int8")
    with pytest.raises(LaceError, match="matmul"):
        build_launch_plan(graph, schedule, plan, matmul="magic")
    other = layer_graph("tiny", "gdn", "decode", 2)
    with pytest.raises(LaceError, match="made for"):
        build_launch_plan(other, planned(other, "happens_before")[0], plan)

    def build(b):
        x = b.inp("x", "f32", 8, 4)
        return b.ctx._node("TOP_K", "top", (x,), (2, 4), dtype="i32")

    top = op_graph(build)
    s, p = planned(top, "no_reuse", streams="serial")
    with pytest.raises(LaceError, match="not implemented by the GPU executor"):
        build_launch_plan(top, s, p)


def test_tolerances_follow_gdn_reference() -> None:
    assert tolerance(layer_graph("tiny", "gdn", "decode", 1), "f32") == 1e-5
    assert tolerance(layer_graph("tiny", "attn", "decode", 1), "f32") == 3e-3
    assert tolerance(layer_graph("tiny", "gdn", "decode", 1), "bf16") == 1e-2
    from concurrency.execute.gpu.check import gdn_tolerance

    assert gdn_tolerance(layer_graph("tiny", "gdn", "prefill", 1, 8), "chunked_tf32") == 5e-3
    assert gdn_tolerance(layer_graph("tiny", "gdn", "prefill", 1, 8), "chunked") == 0.0
    assert gdn_tolerance(layer_graph("tiny", "attn", "prefill", 1, 8), "chunked_tf32") == 0.0


def test_chunked_kernel_shared_memory_fits_hopper() -> None:
    """Every chunked GDN kernel fits Hopper's 227 KB per block; prep and out fit twice per SM
    (228 KB, 1 KB reserved per block) at the largest tensor-core head size."""
    from concurrency.execute.gpu.lowering import (
        MAX_SHARED_BYTES,
        gdn_chunk_shared_bytes,
        gdn_chunked_shared_bytes,
    )

    assert gdn_chunked_shared_bytes(256) <= MAX_SHARED_BYTES
    for dkp in (32, 64, 128):
        sizes = gdn_chunk_shared_bytes(dkp)
        assert max(sizes.values()) <= MAX_SHARED_BYTES, (dkp, sizes)
        assert 2 * (sizes["prep"] + 1024) <= 228 * 1024 and 2 * (sizes["out"] + 1024) <= 228 * 1024
    assert gdn_chunk_shared_bytes(128) == {"prep": 108_544, "state": 142_848, "out": 107_008}
    assert all(STORAGE_BYTES[d] in (2, 4, 8) for d in STORAGE_BYTES)


def _gdn_plan(dk: int, n_tok: int, n_seq: int, gdn: str, offset: int = 0):
    from test_gpu_kernels import gdn_graph

    graph = gdn_graph(dk, 2, 6, n_tok, n_seq, offset=offset)
    schedule, plan = planned(graph, "no_reuse", streams="serial")
    lp = build_launch_plan(graph, schedule, plan, gdn=gdn)
    (node,) = [n for n in lp.nodes if n.op == "GATED_DELTA_NET"]
    return lp, node


def test_gated_delta_launches() -> None:
    """The recurrent form: 16-byte kernel (16 lanes per column, or the lanes the form names) on
    aligned rows, the per-element
    one (a warp per column) on a view one float off; the chunked form: prep, state, out in that
    order, grids per chunk / per 64 value columns, its four scratch arrays private to the node
    and disjoint; head sizes above 128 take the one-kernel FFMA form, which chunked_tf32 does
    not have."""
    _, node = _gdn_plan(128, 1, 3, "auto")
    (rec,) = node.launches
    assert rec.kernel == "gdn_recurrent_v2_l16" and rec.grid == (16, 6, 3)
    assert rec.block == (128, 1, 1)
    for form, kernel, columns in (
        ("recurrent_l8", "gdn_recurrent_v4", 16),
        ("recurrent_l32", "gdn_recurrent_v1_l32", 4),
    ):
        _, node = _gdn_plan(128, 1, 3, form)
        (rec,) = node.launches
        assert rec.kernel == kernel and rec.grid == (128 // columns, 6, 3)
    _, node = _gdn_plan(128, 1, 3, "auto", offset=1)
    (rec,) = node.launches
    assert rec.kernel == "gdn_recurrent_s1" and rec.grid == (32, 6, 3)
    lp, node = _gdn_plan(32, 130, 2, "auto")
    prep, state, out = node.launches
    assert [x.kernel for x in node.launches] == [
        "gdn_chunk_prep_d32",
        "gdn_chunk_state_d32",
        "gdn_chunk_out_d32",
    ]
    assert prep.grid == out.grid == (3, 6, 2) and state.grid == (1, 6, 2)
    assert all(x.block == (256, 1, 1) for x in node.launches)
    ptrs = [[p for k, p in x.args if k == "ptr" and p.buffer == SCRATCH] for x in node.launches]
    gam, wm, u = ptrs[0]
    assert ptrs[1] == [gam, wm, u, ptrs[1][3]] and ptrs[2] == [gam, u, ptrs[1][3]]
    heads = 3 * 6 * 2
    starts = [gam.offset_bytes, wm.offset_bytes, u.offset_bytes, ptrs[1][3].offset_bytes]
    sizes = [4 * heads * 64, 4 * heads * 64 * 32, 4 * heads * 64 * 64, 4 * heads * 32 * 64]
    assert starts == sorted(starts)
    assert all(a + n <= b for a, n, b in zip(starts[:-1], sizes, starts[1:], strict=False))
    assert starts[-1] + sizes[-1] <= lp.buffers[SCRATCH].nbytes
    _, node = _gdn_plan(128, 130, 1, "chunked_tf32")
    assert node.launches[0].kernel == "gdn_chunk_prep_d128_tf32"
    _, node = _gdn_plan(256, 65, 1, "chunked")
    assert [x.kernel for x in node.launches] == ["gdn_chunked_f32"]
    with pytest.raises(LaceError, match="chunked_tf32"):
        _gdn_plan(256, 65, 1, "chunked_tf32")


def test_kernel_dir_ships_every_source() -> None:
    files = set(kernel_files.sources())
    assert files == {p.name for p in (REPO / "kernels").glob("*.cu")}
    assert len(files) >= 9
    for name in files:
        head = (REPO / "kernels" / name).read_text(encoding="utf-8").split("#include", 1)[0]
        for word in ("What", "Shape legend", "Launch"):
            assert word in head, f"kernels/{name}: header lacks {word!r}"


# ---------------------------------------------------------------------------- clear errors
def _run_isolated(code: str) -> subprocess.CompletedProcess:
    prelude = "import sys\nsys.path[:0] = [{!r}, {!r}]\n".format(str(REPO), str(REPO / "tests"))
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True
    )


def test_without_cupy_every_entry_point_names_the_fix() -> None:
    done = _run_isolated(
        """
        sys.modules["cupy"] = None
        sys.modules["nvmath"] = None
        sys.modules["cupti"] = None
        from concurrency.errors import MissingToolError
        from concurrency.execute.gpu import build_launch_plan, check_gpu, run_gpu
        from concurrency.execute.gpu.backend import nvmath_advanced, cupti
        from concurrency.execute.gpu.runner import DeviceRun
        from gpu_cases import layer_graph, planned
        g = layer_graph("tiny", "gdn", "decode", 1)
        s, p = planned(g, "happens_before")
        lp = build_launch_plan(g, s, p)
        for call in (lambda: run_gpu(lp, {}), lambda: DeviceRun(lp), lambda: check_gpu(g, s, p),
                     nvmath_advanced, cupti):
            try:
                call()
            except MissingToolError as exc:
                msg = str(exc)
                assert "\\n" not in msg, msg
                print(msg)
            else:
                raise SystemExit("no error")
        """
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 5
    assert all("lace-kit[gpu]" in line for line in lines)
    assert "matmul='custom'" in lines[3]


def test_no_gpu_is_one_line(monkeypatch) -> None:
    from concurrency.execute.gpu import backend

    def no_device() -> int:
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected\ndetails")

    fake = types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    )
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(MissingToolError, match=r"^no CUDA GPU found \(cudaErrorNoDevice") as info:
        backend.cupy()
    assert "\n" not in str(info.value)
    fake.cuda.runtime.getDeviceCount = lambda: 0
    with pytest.raises(MissingToolError, match="no CUDA GPU found"):
        backend.cupy()


def test_kernel_launch_values_are_plain() -> None:
    graph = layer_graph("tiny", "gdn", "prefill", 1, 8)
    schedule, plan = planned(graph, "happens_before")
    lp = build_launch_plan(graph, schedule, plan)
    for node in lp.nodes:
        for launch in node.launches:
            assert isinstance(launch, KernelLaunch | MatmulLaunch)
            if isinstance(launch, KernelLaunch):
                assert all(kind in ("ptr", "i64", "i32", "f32", "f64") for kind, _ in launch.args)
                assert launch.block[0] % 32 == 0 and launch.block[0] <= 1024
                assert all(g >= 1 for g in launch.grid)


def test_selfcheck_targets_and_summary(tmp_path) -> None:
    """The device script's pure parts: kernel and layer tests split per function (a faulting
    kernel cannot take the other tests down), JUnit results summarised per test function with
    the exact-activation errors in the table, failures capped in the recap."""
    from concurrency.execute.gpu import selfcheck

    targets = selfcheck.test_targets(selfcheck.default_tests())
    assert "tests/test_gpu_kernels.py::test_gated_delta_rule" in targets
    assert "tests/test_gpu_layers.py::test_layer_every_safe_policy_eager_and_graph" in targets
    assert "tests/test_gpu_layers.py::test_engine_flow_offsets_on_the_gpu" in targets
    assert "tests/test_gpu_transformers.py" in targets
    assert not any("test_gpu_launch" in t for t in targets)
    junit = tmp_path / "j.xml"
    cases = [
        '<testcase classname="tests.test_gpu_layers" name="test_x[a]"><properties>'
        '<property name="max_rel_error" value="2.000e-06"/>'
        '<property name="tolerance" value="1e-05"/>'
        "</properties></testcase>"
    ]
    for i in range(selfcheck.RECAP_FAILURES + 2):
        cases.append(
            f'<testcase classname="tests.test_gpu_layers" name="test_x[b{i}]"><properties>'
            '<property name="max_rel_error" value="3.000e-02"/>'
            '<property name="tolerance" value="1e-05"/>'
            '<property name="exact_rel_error" value="4.000e-02"/>'
            '<property name="exact_tolerance" value="1.0e-02"/>'
            '</properties><failure message="assert 0.03 &lt;= 1e-05">trace</failure></testcase>'
        )
    junit.write_text(
        f'<testsuites><testsuite name="pytest">{"".join(cases)}</testsuite></testsuites>'
    )
    lines = selfcheck.summary([junit], tmp_path / "table.txt")
    text = "\n".join(lines)
    assert "FAIL:17 pass:1" in text and "3.000e-02 (tol 1e-05) [b" in text
    assert "FAIL layers::test_x[b0] err=3.000e-02 exact=4.000e-02 assert 0.03 <= 1e-05" in text
    assert sum(line.startswith("  FAIL") for line in lines) == selfcheck.RECAP_FAILURES
    assert "2 more failures in results.txt" in lines[-1]
    table = (tmp_path / "table.txt").read_text().splitlines()
    assert len(table) == 1 + 1 + selfcheck.RECAP_FAILURES + 2
    assert "4.000e-02" in table[2] and "1.0e-02" in table[2]


def test_selfcheck_packs_one_archive(tmp_path, capsys) -> None:
    """Without a GPU the self-check still ends with its recap and one archive of every file
    (the work folder's JUnit and logs), results.txt beside it."""
    from concurrency.execute.gpu import selfcheck

    work = tmp_path / "work"
    (work / "deep").mkdir(parents=True)
    (work / "results.txt").write_text("table\n")
    (work / "deep" / "pytest-00.log").write_text("log\n")
    out = tmp_path / "out"
    code = selfcheck.main(["--out", str(out), "--work", str(work), "--no-tests", "--no-timing"])
    printed = capsys.readouterr().out
    assert "== recap" in printed and "files:" in printed.splitlines()[-1]
    assert sorted(p.name for p in out.iterdir()) == ["results.txt", "selfcheck.tar.gz"]
    import tarfile

    with tarfile.open(out / "selfcheck.tar.gz") as tar:
        names = tar.getnames()
    assert "selfcheck/deep/pytest-00.log" in names and "selfcheck/results.txt" in names
    assert code in (0, 1)  # 1 where no GPU compiles the kernels


def test_node_bytes_count_what_each_node_moves() -> None:
    """The per-kernel table's byte counts on Qwen3.5-27B's GDN decode layer (bf16 weights):
    a state gather moves one 3 MiB row each way (not the cells tensor), a projection its weight
    once plus x and its result, the state write-back a copy, views nothing."""
    from concurrency.execute.gpu.bench import node_bytes, timed_plan
    from concurrency.graph.builders import build_graph
    from concurrency.graph.config import get_config

    graph = build_graph(get_config("qwen3.5-27b"), "gdn", "decode", 1)
    lp = timed_plan(graph, "one", "happens_before", "bf16")
    moved = {n.node: node_bytes(lp, n.index) for n in lp.nodes}
    state = 128 * 128 * 48 * 4
    assert moved["ssm_states-0"] == 2 * state + 4  # + the i32 row index
    assert moved["ssm_state_write-0"] == 2 * state
    assert moved["qkv-0"] == 5120 * 10240 * 2 + 5120 * 4 + 10240 * 4
    assert moved["beta_proj-0"] == 5120 * 48 * 2 + 5120 * 4 + 48 * 4
    assert all(moved[n.node] == 0 for n in lp.nodes if not n.launches)
    weights = sum(spec.nbytes for spec in lp.buffers.values() if spec.kind == "weight")
    assert weights < sum(moved.values()) < weights + 12 * state


def test_attention_splits_keys_only_when_blocks_are_few() -> None:
    """Flash-decoding: a decode step's 24 heads split 256 keys into 8 spans (a partial kernel
    writing the scratch, then the combine); a prompt of 65 tokens has blocks enough (one
    kernel); 48 keys are too few to split."""
    from concurrency.execute.gpu.lowering import attention_splits
    from concurrency.graph.builders import build_graph
    from concurrency.graph.config import get_config

    assert attention_splits(24, 256) == 8
    assert attention_splits(65 * 24, 256) == 1
    assert attention_splits(42, 48) == 1
    assert attention_splits(6, 512) == 16
    cfg = get_config("qwen3.5-27b").replace(n_vocab=256)
    graph = build_graph(cfg, "stack", "decode", 1, layers=4)
    schedule, plan = planned(graph, "happens_before")
    lp = build_launch_plan(graph, schedule, plan, weight_dtype="f16")
    (node,) = [n for n in lp.nodes if n.op == "FLASH_ATTN_EXT"]
    partial, combine = node.launches
    assert isinstance(partial, KernelLaunch) and isinstance(combine, KernelLaunch)
    assert partial.grid == (1, 24, 8) and combine.grid == (1, 24, 1)
    assert combine.kernel == "flash_attn_combine_f32"
    part = [v for k, v in partial.args if k == "ptr"][-1]
    assert part.buffer == SCRATCH and part == [v for k, v in combine.args if k == "ptr"][-1]


def test_gemv_launch_fills_the_gpu_for_thin_and_wide_outputs() -> None:
    """mul_mat_vec16's grid and team width: the 48-row β projection takes whole blocks per row
    pair (24 blocks of 8 warps splitting K), the 10240-row qkv projection two warps per team
    (1280 blocks), a short K never more warps than it has 16-byte pieces."""
    from concurrency.execute.gpu.launch import Ptr, TensorRef
    from concurrency.execute.gpu.lowering import gemv16_launch

    def weight(k: int, dtype: str) -> TensorRef:
        es = STORAGE_BYTES[dtype]
        return TensorRef("w", Ptr("weight:w", 0), (k, 1, 1, 1), (es, es * k, 0, 0), dtype)

    def shape(launch):  # (kernel, grid.x, wpr)
        return launch.kernel, launch.grid[0], launch.args[-1][1]

    assert shape(gemv16_launch(weight(5120, "bf16"), 48, 1, ())) == (
        "mul_mat_vec16_bf16_c1",
        24,
        8,
    )
    assert shape(gemv16_launch(weight(5120, "bf16"), 10240, 1, ())) == (
        "mul_mat_vec16_bf16_c1",
        1280,
        2,
    )
    assert shape(gemv16_launch(weight(5120, "f16"), 17408, 4, ())) == (
        "mul_mat_vec16_f16_c4",
        1088,
        1,
    )
    assert shape(gemv16_launch(weight(64, "f32"), 96, 3, ())) == ("mul_mat_vec16_f32_c4", 6, 1)
