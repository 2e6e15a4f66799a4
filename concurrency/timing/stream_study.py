"""One stream against several, simulated: the comparison `lace simulate` prints and the
notebooks sweep over batch sizes and GPUs.

`compare_streams` simulates a graph twice, on the multi-stream schedule of its fork regions
and on one stream, and computes the critical-path bound; `speedup_sweep` repeats that over
batch sizes and GPUs, `launch_gap_sweep` over launch gaps, and `pr_21897_comparison` sets the
simulator against the speedups PR #21897 reported on an RTX 5090. All return plain rows (a
notebook turns them into a DataFrame).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import (
    DEFAULT_MAX_STREAMS,
    Schedule,
    serial_schedule,
    stream_schedule,
)
from concurrency.timing.gpus import GpuSpec, get_gpu
from concurrency.timing.metrics import (
    closeness,
    concurrency_us,
    critical_path_us,
    makespan_us,
    overlap_ratio,
    speedup,
    work_bound_us,
)
from concurrency.timing.simulate import simulate
from concurrency.timing.timeline import Timeline


@dataclass(frozen=True)
class StreamComparison:
    """A graph simulated on several streams and on one, with its critical-path bound."""

    graph: Graph
    gpu: GpuSpec
    schedule: Schedule
    parallel: Timeline
    serial: Timeline
    critical_path_us: float
    weight_bytes_per_param: float = 2

    def rows(self) -> list[dict[str, object]]:
        """Two table rows: the multi-stream schedule, then one stream."""
        out = []
        for timeline in (self.parallel, self.serial):
            out.append(
                {
                    "streams": timeline.meta.streams,
                    "makespan_us": makespan_us(timeline),
                    "critical_path_us": self.critical_path_us,
                    "concurrency_us": concurrency_us(timeline),
                    "overlap_ratio": overlap_ratio(timeline),
                    "speedup": speedup(self.serial, timeline),
                    "closeness": closeness(self.critical_path_us, timeline),
                }
            )
        return out

    def row(self) -> dict[str, object]:
        """One row for sweeps: the graph, the GPU and both makespans."""
        m = self.graph.meta
        return {
            "model": m.model,
            "layer": m.layer,
            "mode": m.mode,
            "batch": m.batch,
            "tokens": m.tokens,
            "device": self.gpu.name,
            "launch": self.parallel.meta.launch,
            "streams": self.schedule.n_streams,
            "serial_us": makespan_us(self.serial),
            "parallel_us": makespan_us(self.parallel),
            "critical_path_us": self.critical_path_us,
            "work_bound_us": work_bound_us(
                self.graph, self.gpu, weight_bytes_per_param=self.weight_bytes_per_param
            ),
            "speedup": speedup(self.serial, self.parallel),
            "overlap_ratio": overlap_ratio(self.parallel),
            "closeness": closeness(self.critical_path_us, self.parallel),
        }


def compare_streams(
    graph: Graph,
    gpu: str | GpuSpec,
    *,
    max_streams: int = DEFAULT_MAX_STREAMS,
    launch: str = "graph",
    weight_bytes_per_param: float = 2,
    detector: str = "general",
    schedule: Schedule | None = None,
) -> StreamComparison:
    """Simulate `graph` on the multi-stream schedule of `detector`'s regions and on one stream.

    The bound is the critical path of the graph's own dependencies (no schedule's joins), the
    same for both rows. schedule: a multi-stream schedule already made for `graph` (a sweep
    makes it once for planning and simulation alike; `simulate` checks that it fits); then
    `detector` and `max_streams` are unused.
    """
    spec = get_gpu(gpu)
    if schedule is None:
        schedule = stream_schedule(graph, detect_branches(graph, detector), max_streams)
    w = weight_bytes_per_param
    return StreamComparison(
        graph=graph,
        gpu=spec,
        schedule=schedule,
        parallel=simulate(graph, schedule, spec, launch=launch, weight_bytes_per_param=w),
        serial=simulate(
            graph, serial_schedule(graph), spec, launch=launch, weight_bytes_per_param=w
        ),
        critical_path_us=critical_path_us(
            graph, None, spec, launch=launch, weight_bytes_per_param=w
        ),
        weight_bytes_per_param=w,
    )


def speedup_sweep(
    model: str,
    layer: str = "gdn",
    batches: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    gpus: Sequence[str | GpuSpec] = ("h100",),
    *,
    mode: str = "decode",
    tokens: int | None = None,
    layers: int | None = None,
    max_streams: int = DEFAULT_MAX_STREAMS,
    launch: str = "graph",
    weight_bytes_per_param: float = 2,
) -> list[dict[str, object]]:
    """`StreamComparison.row()` for every batch size and GPU (each graph built once)."""
    rows = []
    for batch in batches:
        graph = build_graph(model, layer, mode, batch, tokens, layers)
        for gpu in gpus:
            cmp = compare_streams(
                graph,
                gpu,
                max_streams=max_streams,
                launch=launch,
                weight_bytes_per_param=weight_bytes_per_param,
            )
            rows.append(cmp.row())
    return rows


def launch_gap_sweep(
    graph: Graph,
    gpu: str | GpuSpec,
    gaps_us: Sequence[float] = (0.0, 1.0, 2.5, 5.0),
    **kwargs: object,
) -> list[dict[str, object]]:
    """`compare_streams` rows for one graph with the GPU's CUDA-graph launch gap set to each
    of `gaps_us` (how much of the speedup is launch latency hidden behind other streams)."""
    spec = get_gpu(gpu)
    rows = []
    for gap in gaps_us:
        variant = dataclasses.replace(spec, launch_gap_graph_us=gap)
        row = compare_streams(graph, variant, **kwargs).row()  # type: ignore[arg-type]
        rows.append({"launch_gap_us": gap, **row})
    return rows


#: PR #21897's RTX 5090 speedups (GGML_CUDA_GRAPH_OPT=1, pp512 in ubatches of the given size;
#: seed-anatomy §4.1): (LACE preset, ubatch) → measured speedup. The MoE rows stop at ubatch 2
#: because the rest of the table was not recoverable.
PR_21897_SPEEDUPS: Mapping[tuple[str, int], float] = MappingProxyType(
    {
        ("qwen3.5-27b", 1): 1.05,
        ("qwen3.5-27b", 2): 1.06,
        ("qwen3.5-27b", 4): 1.06,
        ("qwen3.5-27b", 8): 1.06,
        ("qwen3.5-35b-a3b", 1): 0.96,
        ("qwen3.5-35b-a3b", 2): 1.07,
    }
)
#: Bytes per parameter of Q4_K_M / Q4_K_S weights (about 4.5–4.9 bits).
Q4_K_BYTES_PER_PARAM = 0.6


def pr_21897_comparison(
    gpu: str | GpuSpec = "rtx5090",
    gaps_us: Sequence[float] = (1.0, 2.5),
    *,
    weight_bytes_per_param: float = Q4_K_BYTES_PER_PARAM,
) -> list[dict[str, object]]:
    """For every row of PR_21897_SPEEDUPS: the whole-model prefill graph of one sequence with
    `ubatch` tokens, simulated on `gpu` with each launch gap, next to the measured speedup.

    The simulated schedule is LACE's general detector on every fork region (GDN mixer, FFN and
    attention forks), which need not be the set of regions the PR runs concurrently."""
    spec = get_gpu(gpu)
    rows = []
    for (model, ubatch), measured in PR_21897_SPEEDUPS.items():
        graph = build_graph(model, "stack", "prefill", 1, ubatch)
        for gap in gaps_us:
            variant = dataclasses.replace(spec, launch_gap_graph_us=gap)
            cmp = compare_streams(graph, variant, weight_bytes_per_param=weight_bytes_per_param)
            rows.append(
                {
                    "model": model,
                    "ubatch": ubatch,
                    "launch_gap_us": gap,
                    "measured_speedup": measured,
                    "simulated_speedup": speedup(cmp.serial, cmp.parallel),
                    "simulated_tokens_per_s": ubatch * 1e6 / makespan_us(cmp.serial),
                }
            )
    return rows
