"""The GPU kernels without a GPU: the same kernel tests as tests/test_gpu_kernels.py, on a subset
of cases, with every kernel compiled as host C++ and run in the CPU emulation of tests/cuda_emu
(threads, barriers and warp shuffles emulated; cuBLASLt computed by NumPy). It checks the
launch plan's argument ABI and the kernels' indexing and arithmetic against the float64
reference in CI; speed, NVRTC, CuPy and nvmath are the GPU run's job. Skipped without g++."""

from __future__ import annotations

import numpy as np
import pytest
import test_gpu_kernels as kernels_tests
import test_gpu_layers as layers_tests
from cuda_emu import emulator
from gpu_cases import op_graph, planned, values_for

import concurrency.execute.gpu.check as check
from concurrency.execute.gpu import reference_inputs
from concurrency.execute.gpu.storage import from_bf16_bits

pytestmark = pytest.mark.skipif(emulator.compiler() is None, reason="g++ is not installed here")


@pytest.fixture(autouse=True)
def emulated(monkeypatch):
    try:
        emulator.library("elementwise.cu")
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"the host C++ build of the kernels failed (needs g++ with C++20): {exc}")
    monkeypatch.setattr(check, "run_gpu", emulator.emu_run_gpu)
    monkeypatch.setattr(kernels_tests, "run_gpu", emulator.emu_run_gpu)
    monkeypatch.setattr(layers_tests, "run_gpu", emulator.emu_run_gpu)


GDN = [
    (16, 2, 6, 1, 2, "real", "auto"),
    (128, 1, 1, 3, 1, "real", "recurrent"),
    (128, 1, 2, 3, 1, "real", "recurrent_l16"),
    (64, 1, 2, 2, 2, "real", "recurrent_l32"),
    (32, 2, 4, 65, 1, "real", "chunked"),
    (32, 2, 4, 65, 1, "strong", "chunked"),
]


@pytest.mark.parametrize("case", GDN, ids=lambda c: "dk{}-hk{}-hv{}-T{}-B{}-{}-{}".format(*c))
def test_gated_delta_rule_emulated(case, record_property) -> None:
    kernels_tests.test_gated_delta_rule(case, record_property)


def test_gated_delta_rule_paths_emulated(record_property) -> None:
    """The per-element paths (views off 16-byte alignment), two chunks with a tail at DKP 64,
    and the TF32 kernels, whose single pass the emulation rounds as the tensor core does: it
    must miss the fp32 gate that the split-TF32 kernels meet (the split is what buys 1e-5)."""
    kernels_tests.test_gated_delta_rule_unaligned_views("recurrent", record_property)
    kernels_tests.test_gated_delta_rule_unaligned_views("chunked", record_property)
    kernels_tests.test_gated_delta_rule((64, 1, 3, 100, 1, "mild", "chunked"), record_property)
    case = (32, 2, 4, 65, 1, "strong")
    kernels_tests.test_gated_delta_rule_tf32(case, record_property)
    with pytest.raises(AssertionError, match="> 1e-05"):
        kernels_tests.gdn_check((32, 2, 4, 65, 1, "real", "chunked_tf32"), record_property)


def test_elementwise_and_row_ops_emulated(record_property) -> None:
    kernels_tests.test_elementwise_and_row_ops_in_place(record_property)


def test_copies_emulated(record_property) -> None:
    kernels_tests.test_copies_concat_and_casts(record_property)


def test_rows_emulated(record_property) -> None:
    kernels_tests.test_get_rows_and_set_rows_wrap_indices(record_property)


def test_conv_rope_attention_router_emulated(record_property) -> None:
    kernels_tests.test_ssm_conv_with_state(2, record_property)
    kernels_tests.test_rope_partial_and_full(16, 64, record_property)
    kernels_tests.test_flash_attention(32, 6, 2, 7, 256, 1, record_property)  # split keys
    kernels_tests.test_flash_attention(32, 6, 2, 7, 48, 1, record_property)  # one kernel
    kernels_tests.test_router_sort_top_k_and_experts(record_property)


@pytest.mark.parametrize("case", [kernels_tests.MATMUL_CASES[i] for i in (1, 2, 4, 8)])
def test_projection_emulated(case, record_property) -> None:
    kernels_tests.test_projection(case, record_property)


def test_tiny_layers_emulated(record_property) -> None:
    for case in (
        ("tiny", "gdn", "decode", 2, None, 0, "happens_before", "auto", "auto"),
        ("tiny", "attn", "prefill", 2, 8, 0, "alloc_dep", "auto", "auto"),
    ):
        layers_tests.test_more_models_modes_and_paths(case, record_property)


@pytest.mark.parametrize("kind", kernels_tests.FUSED)
def test_fused_kernels_emulated(kind, record_property) -> None:
    kernels_tests.test_fused_kernel_matches_the_unfused_ops(kind, record_property)


@pytest.mark.parametrize("planted", ["cast", "store"])
def test_a_wrong_rounding_fails_the_check(planted, monkeypatch) -> None:
    """The modelled comparison feeds the reference the device's own cast activations and f16
    cache rows, so it must also check them: the honest device passes (rounding excess ≤ 1, the
    fp32 threshold) and one whose bf16 cast, or whose f16 row store, is one ulp off (a planted
    bad kernel) fails on the rounding excess."""

    def build(b):
        x = b.inp("x", "f32", 256, 24)
        proj = b.ctx.mul_mat(b.weight("blk.0.attn_qkv.weight", 256, 40), x, base="proj")
        cache = b.state("cache", "f16", 40, 32)
        rows = b.inp("rows", "i64", 24)
        return proj, b.ctx.set_rows(cache, proj, rows, base="cache_write")

    graph = op_graph(build)
    schedule, plan = planned(graph, "no_reuse", streams="serial")
    given = values_for(graph, 9, rows=np.arange(24) + 5)
    inputs = reference_inputs(graph, values=given, weight_dtype="bf16")
    kw = {"inputs": inputs, "weight_dtype": "bf16", "matmul": "nvmath"}
    honest = check.check_gpu(graph, schedule, plan, **kw)
    assert honest.ok and 0.0 < honest.rounding_excess <= 1.0, honest.summary()
    assert honest.error < 1e-6 < honest.exact_error <= honest.exact_tolerance

    def one_ulp_off(lp, values, launch="graph", **options):
        got = emulator.emu_run_gpu(lp, values, launch, **options)
        if planted == "cast":
            for name, value in options["activations"].items():
                bits = (value.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
                bits = bits - (bits & 0x7FFF > 0)
                options["activations"][name] = from_bf16_bits(bits).astype(np.float64)
        else:
            for name, value in options["stores"].items():
                half = value.astype(np.float16)
                options["stores"][name] = np.nextafter(half, np.float16(0)).astype(np.float64)
        return got

    monkeypatch.setattr(check, "run_gpu", one_ulp_off)
    bad = check.check_gpu(graph, schedule, plan, **kw)
    assert bad.rounding_excess > 1.5 and not bad.ok, bad.summary()
