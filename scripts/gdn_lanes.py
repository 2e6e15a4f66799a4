"""LACE's recurrent gated-delta kernel with 8, 16 or 32 lanes per value column, on the GPU.

    python3 scripts/gdn_lanes.py [--out FILE] [--rounds 3] [--replays 200]

Qwen3.5-27B GDN dims, decode, B = 1, 4, 16, 64; each form timed as the peers time LACE's op
(concurrency.peers.lace_peers): separate copies per graph (the state read from HBM) and the op
chained through its state (L2-resident at small B). CUDA-graph replays timed with CUDA events,
forms in a rotated order per round (never a fixed order), the median of the rounds' medians.
Prints a table (µs per op) and writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

FORMS = ("recurrent_l8", "recurrent_l16", "recurrent_l32")
BATCHES = (1, 4, 16, 64)


def main() -> None:
    from concurrency.execute.gpu.bench import replay_time
    from concurrency.graph.config import get_config
    from concurrency.peers.cases import GdnDims
    from concurrency.peers.lace_peers import DECODE_COPIES, core_chain_graph, core_graph

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gdn-lanes.json"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--replays", type=int, default=200)
    args = ap.parse_args()
    dims = GdnDims.from_config(get_config("qwen3.5-27b"))
    medians: dict[tuple[str, int, str], list[float]] = {}
    for r in range(args.rounds):
        order = FORMS[r % len(FORMS) :] + FORMS[: r % len(FORMS)]
        for b in BATCHES:
            copies = DECODE_COPIES.get(b, 2)
            for kind in ("hbm", "l2"):
                for form in order:
                    graph = (
                        core_graph(dims, b, 1, copies)
                        if kind == "hbm"
                        else core_chain_graph(dims, b, copies)
                    )
                    t = replay_time(
                        graph, streams="one", weight_dtype="f32", replays=args.replays, gdn=form
                    )
                    medians.setdefault((form, b, kind), []).append(t.median_us / copies)
    rows = [
        {"form": f, "batch": b, "state": k, "median_us": statistics.median(v), "rounds": v}
        for (f, b, k), v in sorted(medians.items(), key=lambda x: (x[0][1], x[0][2], x[0][0]))
    ]
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{'B':>3} {'state':>5} " + " ".join(f"{f:>14}" for f in FORMS))
    for b in BATCHES:
        for kind in ("hbm", "l2"):
            cells = [statistics.median(medians[(f, b, kind)]) for f in FORMS]
            print(f"{b:>3} {kind:>5} " + " ".join(f"{c:>14.2f}" for c in cells))


if __name__ == "__main__":
    main()
