"""flash-linear-attention's GDN kernels and the PyTorch + fla decode layer, timed as CUDA-graph
replays (rows for the peers table).

* fla core, decode: `fused_recurrent_gated_delta_rule` on one token per sequence, B in
  DECODE_BATCHES; prefill: `chunk_gated_delta_rule` on the PREFILL_CASES. Both with q, k, v in
  bf16 (how a model calls them), g fp32, β bf16, the state fp32, L2 norm of q and k inside the
  kernel; several independent input sets per graph for the short decode kernels.
* torch+fla layer: `TorchGdnLayer.step` (bf16 weights, the 27B dims) on one stream and on four.

Before timing, each kind is checked: the fla decode kernel and the chunked kernel against
`reference_gdn` (float64) on the smallest case, the layer against transformers'
`Qwen3_5GatedDeltaNet` (fp32, small dims), and the four-stream step against the one-stream
step on the same inputs and states. A failed check is written into the rows' notes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from concurrency.peers.cases import (
    DECODE_BATCHES,
    PREFILL_CASES,
    TORCH_STREAMS,
    GdnDims,
    core_floor_us,
    layer_floor_us,
)
from concurrency.peers.results import PeerRow, failed_row, measured_row
from concurrency.peers.timing import copies_for, graph_times_us

#: Guesses of one call's GPU time (µs), to pick how many copies go in one graph.
_DECODE_GUESS_US = {1: 5.0, 4: 9.0, 16: 38.0, 64: 140.0}
CORE_TOL = 1e-2  # bf16 inputs against float64 (gdn-reference §5.4: bf16 end to end ≤ 1e-2)
LAYER_TOL = 5e-3  # fp32 layer through fla's kernels (TF32 dots) against transformers


def _core_inputs(dims: GdnDims, batch: int, tokens: int, seed: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    gen = torch.Generator(device="cuda").manual_seed(seed)
    bf = torch.bfloat16

    def rn(*shape: int) -> Any:
        return torch.randn(*shape, generator=gen, device="cuda")

    return {
        "q": rn(batch, tokens, dims.hk, dims.dk).to(bf),
        "k": rn(batch, tokens, dims.hk, dims.dk).to(bf),
        "v": rn(batch, tokens, dims.hv, dims.dv).to(bf),
        "g": F.logsigmoid(rn(batch, tokens, dims.hv) + 2.0),  # log decay in (−∞, 0), fp32
        "beta": torch.sigmoid(rn(batch, tokens, dims.hv)).to(bf),
        "initial_state": 0.1 * rn(batch, dims.hv, dims.dk, dims.dv),
    }


def _call(kernel: Callable[..., Any], inputs: dict[str, Any]) -> Callable[[], Any]:
    def run() -> Any:
        return kernel(**inputs, output_final_state=True, use_qk_l2norm_in_kernel=True)

    return run


def check_core(kernel: Callable[..., Any], dims: GdnDims, tokens: int) -> float:
    """Relative error of `kernel` (output and final state) against `reference_gdn`."""
    import torch

    from concurrency.peers.torch_layer import reference_gdn, relative_error

    inputs = _core_inputs(dims, 1, tokens, seed=123)
    o, s = _call(kernel, inputs)()
    torch.cuda.synchronize()
    ref_o, ref_s = reference_gdn(
        inputs["q"], inputs["k"], inputs["v"], inputs["g"], inputs["beta"], inputs["initial_state"]
    )
    return max(relative_error(ref_o, o), relative_error(ref_s, s))


def _check_note(what: str, error: float, tol: float) -> str:
    verdict = "ok" if error <= tol else "CHECK FAILED"
    return f"{what}: rel. error {error:.1e} (tol {tol:.0e}) {verdict}"


def fla_core_rows(dims: GdnDims, replays: int, log: Callable[[str], None]) -> list[PeerRow]:
    """fla's decode and prefill kernels, every case a row (a failure becomes its row)."""
    import torch
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule

    rows: list[PeerRow] = []
    dtype_note = "q,k,v,β bf16; g, state fp32; L2 norm in kernel"
    try:
        rec_check = _check_note(
            "fused_recurrent vs float64",
            check_core(fused_recurrent_gated_delta_rule, dims, 1),
            CORE_TOL,
        )
    except Exception as exc:  # a check that cannot run is reported, the timing still runs
        rec_check = f"check not run: {type(exc).__name__}: {exc}"[:200]
    log(f"  fla decode check: {rec_check}")
    for b in DECODE_BATCHES:
        variant = "fused_recurrent"
        try:
            n = copies_for(_DECODE_GUESS_US.get(b, 100.0))
            sets = [_core_inputs(dims, b, 1, seed=i) for i in range(n)]
            calls = [_call(fused_recurrent_gated_delta_rule, s) for s in sets]
            with torch.no_grad():
                times = graph_times_us(calls, replays)
            rows.append(
                measured_row(
                    "fla",
                    "gdn core decode",
                    variant,
                    b,
                    1,
                    times,
                    floor_us=core_floor_us(dims, b),
                    notes=f"{dtype_note}; {n} copies per graph; {rec_check}",
                )
            )
            log(f"  fla {variant} B={b}: {rows[-1].median_us:.1f} µs")
        except Exception as exc:
            rows.append(failed_row("fla", "gdn core decode", variant, b, 1, "failed", repr(exc)))
            log(f"  fla {variant} B={b}: FAILED {exc!r}"[:300])
        torch.cuda.empty_cache()
    try:
        chunk_check = _check_note(
            "chunk vs float64", check_core(chunk_gated_delta_rule, dims, 130), CORE_TOL
        )
    except Exception as exc:
        chunk_check = f"check not run: {type(exc).__name__}: {exc}"[:200]
    log(f"  fla chunk check: {chunk_check}")
    for b, t in PREFILL_CASES:
        variant = "chunk"
        try:
            calls = [_call(chunk_gated_delta_rule, _core_inputs(dims, b, t, seed=0))]
            with torch.no_grad():
                times = graph_times_us(calls, max(20, replays // 4))
            rows.append(
                measured_row(
                    "fla",
                    "gdn core prefill",
                    variant,
                    b,
                    t,
                    times,
                    notes=f"{dtype_note}; {chunk_check}",
                )
            )
            log(f"  fla {variant} B={b} T={t}: {rows[-1].median_us:.1f} µs")
        except Exception as exc:
            rows.append(failed_row("fla", "gdn core prefill", variant, b, t, "failed", repr(exc)))
            log(f"  fla {variant} B={b} T={t}: FAILED {exc!r}"[:300])
        torch.cuda.empty_cache()
    return rows


def _streams_agree(dims: GdnDims, batch: int) -> float:
    """Relative difference between the one-stream and four-stream steps (output and both
    states) from the same inputs and states, run eagerly on real streams."""
    import torch

    from concurrency.peers.torch_layer import TorchGdnLayer, relative_error

    layer = TorchGdnLayer.random(dims, batch, seed=5)
    x = torch.randn(batch, dims.d_model, device="cuda").to(torch.bfloat16)
    conv0, state0 = layer.conv_state.clone(), layer.state.clone()
    side = tuple(torch.cuda.Stream() for _ in range(3))
    results = []
    for streams in ((), side):
        layer.conv_state.copy_(conv0)
        layer.state.copy_(state0)
        with torch.no_grad():
            y = layer.step(x, streams)
        torch.cuda.synchronize()
        results.append((y.clone(), layer.conv_state.clone(), layer.state.clone()))
    return max(relative_error(a, b) for a, b in zip(results[0], results[1], strict=True))


def torch_layer_rows(dims: GdnDims, replays: int, log: Callable[[str], None]) -> list[PeerRow]:
    """The PyTorch + fla decode layer at every decode batch, on one stream and on four."""
    import torch

    from concurrency.peers.torch_layer import (
        TorchGdnLayer,
        check_against_transformers,
        check_cores,
    )

    checks = []
    for what, fn in (
        ("vs transformers Qwen3_5GatedDeltaNet (fp32)", lambda: check_against_transformers()),
        ("vs float64 core (fp32)", lambda: check_cores()),
    ):
        try:
            checks.append(_check_note(what, fn(), LAYER_TOL))
        except Exception as exc:
            checks.append(f"{what}: not run: {type(exc).__name__}: {exc}"[:200])
    check = "; ".join(checks)
    try:
        agree = _streams_agree(dims, 4)
        check += "; " + _check_note("4 streams vs 1", agree, 1e-6)
    except Exception as exc:
        check += f"; stream check not run: {type(exc).__name__}"
    log(f"  torch layer checks: {check}")
    rows: list[PeerRow] = []
    for b in DECODE_BATCHES:
        layer = x = None
        for n_streams in TORCH_STREAMS:
            variant = f"{n_streams} stream" + ("s" if n_streams > 1 else "")
            try:
                if layer is None:  # one layer per batch, both stream variants time it
                    layer = TorchGdnLayer.random(dims, b, seed=b)
                    x = torch.randn(b, dims.d_model, device="cuda").to(torch.bfloat16)
                side = tuple(torch.cuda.Stream() for _ in range(3)) if n_streams == 4 else ()

                def step(layer: Any = layer, x: Any = x, side: tuple = side) -> Any:
                    return layer.step(x, side)

                with torch.no_grad():
                    times = graph_times_us([step], replays)
                rows.append(
                    measured_row(
                        "torch+fla",
                        "gdn layer decode",
                        variant,
                        b,
                        1,
                        times,
                        floor_us=layer_floor_us(dims, b),
                        notes=f"bf16 weights, cuBLAS GEMV/GEMM, fla fused_recurrent; {check}",
                    )
                )
                log(f"  torch+fla layer {variant} B={b}: {rows[-1].median_us:.1f} µs")
            except Exception as exc:
                rows.append(
                    failed_row("torch+fla", "gdn layer decode", variant, b, 1, "failed", repr(exc))
                )
                log(f"  torch+fla layer {variant} B={b}: FAILED {exc!r}"[:300])
        del layer, x
        torch.cuda.empty_cache()
    return rows
