"""Hazard sites: GDN layer, attention layer, dense FFN fork, MoE FFN fork, other."""

from __future__ import annotations

import pytest

from concurrency.graph.branches import detect_branches
from concurrency.graph.builders import build_graph
from concurrency.graph.ir import Graph
from concurrency.graph.schedule import stream_schedule
from concurrency.memory.check import Hazard
from concurrency.memory.compare import compare_policies
from concurrency.memory.sites import SITES, SiteMap, format_sites, node_parts

#: Node names (without the layer suffix) that llama.cpp's FFN block builds: dense FFN, routed
#: experts, shared expert, the post-attention norm and the layer output.
FFN_STEMS = ("attn_post_norm", "ffn_", "moe_", "shexp_", "l_out")


def _stem(name: str) -> str:
    return name.rsplit("-", 1)[0]


def _by_name(graph: Graph, h: Hazard) -> str:
    """An independent classification: by the nodes' names and the config alone."""
    cfg = graph.config
    assert cfg is not None
    ffn = [_stem(n).startswith(FFN_STEMS) for n in (h.first_node, h.second_node)]
    assert ffn[0] == ffn[1], f"a hazard across a layer's mixer and FFN: {h}"
    if ffn[0]:
        return "moe" if cfg.is_moe else "ffn"
    layer = graph[h.first_node].layer
    assert layer is not None
    return "gdn" if cfg.is_recurrent(layer) else "attn"


@pytest.mark.parametrize("model", ["tiny", "qwen3.5-27b", "qwen3.5-35b-a3b", "qwen3-next-80b-a3b"])
@pytest.mark.parametrize("flow", ["graph", "engine"])
def test_sites_agree_with_a_name_based_classification(model: str, flow: str) -> None:
    g = build_graph(model, "stack", "decode", 2, None, 4, n_ctx=512)
    rep = detect_branches(g)
    sched = stream_schedule(g, rep)
    sites = SiteMap(g, rep)
    seen: set[str] = set()
    for r in compare_policies(g, sched, rep, ["sequential", "interleave"], 32, flow=flow):
        assert sum(r.sites.values()) == len(r.hazards)
        for h in r.hazards:
            assert sites.hazard_site(h) == _by_name(g, h), h.explanation
            seen.add(sites.hazard_site(h))
    assert "gdn" in seen
    if g.config is not None and g.config.is_moe:
        assert "moe" in seen  # the MoE races the old 'GDN hazards' count swallowed


def test_node_parts_of_a_dense_stack() -> None:
    g = build_graph("tiny", "stack", "decode", 1, None, 4, n_ctx=512)
    parts = dict(zip(g.nodes, node_parts(g), strict=True))
    assert parts["attn_norm-0"] == parts["z_silu-0"] == parts["attn_residual-0"] == "gdn"
    assert parts["attn_post_norm-0"] == parts["ffn_up-0"] == parts["l_out-0"] == "ffn"
    assert parts["fattn-3"] == "attn"
    assert parts["inp_embd"] == parts["result_output"] == "other"


def test_a_planted_dense_ffn_hazard_is_an_ffn_site() -> None:
    g = build_graph("qwen3.5-27b", "stack", "decode", 1, None, 4, n_ctx=512)
    rep = detect_branches(g)
    ffn_region = next(r for r in rep.regions if r.fork == "attn_post_norm-0")
    up, gate = ffn_region.branches[0].nodes[0], ffn_region.branches[1].nodes[0]
    h = Hazard("write-after-write", up, gate, up, gate, 1, 2, 0, 4, "planted")
    sites = SiteMap(g, rep)
    assert sites.hazard_site(h) == "ffn"
    assert sites.count([h]) == {"gdn": 0, "attn": 0, "ffn": 1, "moe": 0, "other": 0, "host": 0}
    assert format_sites(sites.count([h, h])) == "ffn 2" and format_sites({}) == "-"
    assert tuple(sites.count([])) == SITES
