"""Why consecutive kernels of one stream overlap in CUPTI timelines (data/README.md).

On a GPU machine (after `source scripts/device_site.sh; device_site diag --pytest nvmath_python
cupti_python`):

    python3 scripts/cupti_order.py --out FILE [--replays 20]

captures the tiny 4-layer stack's 8-token prompt under `happens_before` on the detector's
streams (the case tests/test_gpu_timeline.py found overlapping), reads the captured CUDA graph's
nodes and edges (tests/gpu_graph_oracle.py), replays it N times under CUPTI and writes one
JSON document (schema lace-cupti-order/1): each plan node's stream and the graph nodes it
created, the graph's default edges, each kernel node's name, and every replay's kernel records
(graph node, start and end in ns from the replay's first kernel). Graph nodes are named by
their id within their graph (CUPTI id & 0xffffffff), which a graph instance keeps.
tests/test_cupti_order.py reads the committed file and derives what data/README.md says.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SCHEMA = "lace-cupti-order/1"
CASE = {"model": "tiny", "layer": "stack", "mode": "prefill", "batch": 1, "tokens": 8}


def _document(
    device: str,
    nodes: list[dict[str, Any]],
    edges: set[tuple[int, int]],
    replays: list[list[tuple[str, int, int, int]]],
) -> dict[str, Any]:
    """The committed form: replays as [graph node, start ns, end ns] from the first kernel."""
    names: dict[int, str] = {}
    compact = []
    for records in replays:
        t0 = min(r[1] for r in records)
        for name, _, _, local in records:
            names[local] = name
        compact.append(sorted([local, start - t0, end - t0] for name, start, end, local in records))
    return {
        "schema": SCHEMA,
        "case": CASE,
        "policy": "happens_before",
        "device": device,
        "nodes": nodes,
        "edges": sorted(edges),
        "kernels": {str(k): v for k, v in sorted(names.items())},
        "replays": compact,
    }


def collect(replays: int) -> dict[str, Any]:
    """On the GPU: capture, read the graph, replay `replays` times under CUPTI."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from gpu_cases import layer_graph, planned
    from gpu_graph_oracle import LOCAL_ID_MASK as LOW
    from gpu_graph_oracle import capture_with_node_ids

    from concurrency.execute.gpu import backend, build_launch_plan, reference_inputs
    from concurrency.execute.gpu.measure import KernelRecorder
    from concurrency.execute.gpu.runner import DeviceRun

    graph = layer_graph("tiny", "stack", "prefill", 1, 8)
    schedule, plan = planned(graph, "happens_before")
    run = DeviceRun(build_launch_plan(graph, schedule, plan))
    run.upload(reference_inputs(graph, seed=6))
    run.run_eager()
    captured = capture_with_node_ids(run)
    nodes = [
        {
            "node": n.node,
            "stream": n.stream,
            "graph_nodes": sorted(i & LOW for i in captured.node_ids.get(n.index, ())),
        }
        for n in run.lp.nodes
        if n.launches
    ]
    edges = {(a & LOW, b & LOW) for a, b in captured.edges}
    records = []
    for _ in range(replays):
        rec = KernelRecorder()
        rec.start()
        try:
            run.replay(captured.graph_exec)
        finally:
            rec.stop()
        records.append([(k.name, k.start_ns, k.end_ns, k.graph_node_id & LOW) for k in rec.kernels])
    run.free()
    return _document(backend.device_name(), nodes, edges, records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--replays", type=int, default=20)
    args = parser.parse_args()
    doc = collect(args.replays)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}: {len(doc['replays'])} replays, {len(doc['nodes'])} nodes")


if __name__ == "__main__":
    main()
