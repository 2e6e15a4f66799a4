"""The recurrent gated-delta kernel's lanes per value column: the default against the committed
H200 timings (data/<recording>/diagnostics/gdn-lanes.json, made by scripts/gdn_lanes.py)."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"


def test_sixteen_lanes_per_column_as_the_default_says() -> None:
    """data/<recording>/diagnostics/gdn-lanes.json (scripts/gdn_lanes.py on the H200): 16 lanes
    per value column within 5 % of 8 at B = 1 and 4, about 9 % faster at 16 and 64, and 32
    lanes slower than 8 everywhere (lowering.GDN_REC_LANES's comment)."""
    from concurrency.execute.gpu.lowering import GDN_REC_LANES

    (path,) = sorted(DATA.glob("*/diagnostics/gdn-lanes.json"))
    t = {(r["form"], r["batch"], r["state"]): r["median_us"] for r in json.loads(path.read_text())}
    assert GDN_REC_LANES == 16
    for state in ("hbm", "l2"):
        for b in (1, 4):
            ratio = t["recurrent_l16", b, state] / t["recurrent_l8", b, state]
            assert 0.95 <= ratio <= 1.05, (b, state, ratio)
        for b in (16, 64):
            ratio = t["recurrent_l16", b, state] / t["recurrent_l8", b, state]
            assert round(1 - ratio, 2) in (0.08, 0.09, 0.10), (b, state, ratio)
        for b in (1, 4, 16, 64):
            assert t["recurrent_l32", b, state] > t["recurrent_l8", b, state]


def test_the_readme_states_the_lanes_at_batch_four() -> None:
    (path,) = sorted(DATA.glob("*/diagnostics/gdn-lanes.json"))
    t = {(r["form"], r["batch"], r["state"]): r["median_us"] for r in json.loads(path.read_text())}
    readme = " ".join((DATA.parent / "README.md").read_text(encoding="utf-8").split())
    l8, l16 = (t[f, 4, "l2"] for f in ("recurrent_l8", "recurrent_l16"))
    h8, h16 = (t[f, 4, "hbm"] for f in ("recurrent_l8", "recurrent_l16"))
    assert (
        f"8 lanes per value column took {l8:.1f} µs in L2 and {h8:.1f} µs from HBM, 16 lanes "
        f"{l16:.1f} and {h16:.1f} µs" in readme
    )
