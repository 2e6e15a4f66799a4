"""The engine probe of issue 9: real llama.cpp graphs, node by node, against the reference dump.

Skipped, with the reason, when llama-cpp-python or gguf is not installed (`make oracle`
installs both)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("gguf", reason="the engine probe needs gguf (`make oracle` installs it)")
pytest.importorskip(
    "llama_cpp", reason="the engine probe needs llama-cpp-python (`make oracle` builds it)"
)

from concurrency.errors import LaceError
from concurrency.graph.builders import build_graph
from concurrency.graph.config import PRESETS, ModelConfig
from concurrency.graph.ir import TensorKind
from concurrency.oracle import engine
from concurrency.oracle.engine import EngineRun, cache_path, probe
from concurrency.oracle.gguf_model import gguf_tensor_shapes
from tests.engine_data import ENGINE_CONFIGS, recorded_run

pytestmark = pytest.mark.oracle

TINY = PRESETS["tiny"]


def _scaled(preset: str, name: str) -> ModelConfig:
    """A CPU-sized copy of a MoE preset (the shapes of the tiny model, 4 experts)."""
    return PRESETS[preset].replace(
        n_embd=256,
        n_layer=4,
        n_head=4,
        n_head_kv=2,
        head_dim=64,
        ssm_d_state=32,
        ssm_n_group=2,
        ssm_dt_rank=4,
        n_vocab=64,
        n_ff=0,
        n_expert=4,
        n_expert_used=2,
        n_ff_exp=64,
        n_ff_shexp=64,
        name=name,
    )


MOE = _scaled("qwen3.5-35b-a3b", "qwen35moe-scaled")
NEXT = _scaled("qwen3-next-80b-a3b", "qwen3next-scaled")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture(scope="module")
def tiny_b1(cache: Path) -> EngineRun:
    return probe(TINY, 1, 8, cache_dir=cache)


@pytest.mark.parametrize("phase", ["prompt", "decode"])
def test_tiny_reproduces_reference_dump(tiny_b1: EngineRun, llama_dump: dict, phase: str) -> None:
    ref = llama_dump[phase]
    got = tiny_b1.phase(phase)
    assert len(got) == len(ref) == 241
    buffers: dict[int, int] = {}
    for i, (node, want) in enumerate(zip(got, ref, strict=True)):
        seen = (node.name, node.op, list(node.ne), node.view_offs, node.buffer_usage, node.offset)
        expected = (
            want["name"],
            want["op"],
            want["ne"],
            want["view_offs"],
            want["buffer_usage"],
            want["offset"],
        )
        assert seen == expected, (phase, i)
        assert list(node.srcs) == want["srcs"], (phase, i, node.name)
        assert node.view_src == want["view_src"], (phase, i, node.name)
        assert node.type == want["type"], (phase, i, node.name)
        # buffer ids differ (addresses there, small ids here) but must partition alike
        assert buffers.setdefault(want["buffer"], node.buffer) == node.buffer, (phase, i)


def test_every_node_observed_once(tiny_b1: EngineRun) -> None:
    """The callback saw as many nodes as ggml_graph_n_nodes of the reserved graphs."""
    assert tiny_b1.reserve_nodes == (len(tiny_b1.prompt), len(tiny_b1.decode))
    assert tiny_b1.prompt[-1].name == "result_output"
    assert tiny_b1.decode[-1].name == "result_output"


@pytest.mark.parametrize("batch", [2, 4])
def test_batched_tiny_probes(cache: Path, batch: int) -> None:
    run = probe(TINY, batch, 8, cache_dir=cache)
    assert len(run.prompt) == len(run.decode) == run.reserve_nodes[0] == run.reserve_nodes[1]
    assert [n.op for n in run.prompt] == [n.op for n in run.decode]
    embed = run.prompt[0]
    assert (embed.name, embed.ne[:2]) == ("model.input_embed", (TINY.n_embd, batch * 8))
    # one rs_s_copy row per sequence, and no extra states to copy
    copies = [n for n in run.decode if n.view_src == "rs_s_copy"]
    assert [c.ne[0] for c in copies] == [batch, 0]
    # the GDN step sees B sequences of T tokens
    gdn_prompt = next(n for n in run.prompt if n.op == "GATED_DELTA_NET")
    q = next(n for n in run.prompt if n.name == "q_conv_predelta-0")
    assert q.ne == (TINY.ssm_d_state, TINY.ssm_n_group, 8, batch)
    assert gdn_prompt.buffer_usage == engine.BUFFER_USAGE_COMPUTE


@pytest.mark.parametrize("cfg", [MOE, NEXT], ids=lambda c: c.arch)
def test_scaled_moe_configs_probe(cache: Path, cfg: ModelConfig) -> None:
    run = probe(cfg, 2, 8, cache_dir=cache)
    assert len(run.prompt) == len(run.decode) == run.reserve_nodes[0]
    ops = {n.op for n in run.prompt}
    assert {"GATED_DELTA_NET", "MUL_MAT_ID", "FLASH_ATTN_EXT", "SSM_CONV"} <= ops
    weights = {s for n in run.prompt for s in n.srcs if s.startswith("blk.")}
    assert weights <= set(gguf_tensor_shapes(cfg))
    ba = "blk.0.ssm_ba.weight" if cfg.arch == "qwen3next" else "blk.0.ssm_alpha.weight"
    assert ba in weights


def test_gguf_names_match_the_dense_builder() -> None:
    graph = build_graph(TINY, "stack", "prefill", 1, 8)
    built = {t.ggml_name: t.shape for t in graph.tensors.values() if t.kind is TensorKind.WEIGHT}
    gguf = {k: (*ne, *(1,) * (4 - len(ne))) for k, ne in gguf_tensor_shapes(TINY).items()}
    assert built == gguf


@pytest.mark.parametrize("cfg", [MOE, NEXT], ids=lambda c: c.arch)
def test_gguf_names_match_the_moe_builder(cfg: ModelConfig) -> None:
    graph = build_graph(cfg, "stack", "prefill", 1, 8)
    built = {t.ggml_name for t in graph.tensors.values() if t.kind is TensorKind.WEIGHT}
    assert built == set(gguf_tensor_shapes(cfg))


def test_cache_hit_loads_nothing(
    tiny_b1: EngineRun, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse() -> None:
        raise AssertionError("a cache hit must not load llama.cpp")

    monkeypatch.setattr(engine, "_load_llama", refuse)
    monkeypatch.setattr(engine, "_run_engine", refuse)
    monkeypatch.setattr(engine.Ggml, "load", refuse)
    again = probe(TINY, 1, 8, cache_dir=cache)
    assert again == tiny_b1
    assert EngineRun.from_json(again.to_json()) == again


def test_cache_key_depends_on_every_argument(cache: Path) -> None:
    base = cache_path(TINY, 1, 8, cache_dir=cache)
    others = {
        cache_path(TINY, 2, 8, cache_dir=cache),
        cache_path(TINY, 1, 9, cache_dir=cache),
        cache_path(TINY, 1, 8, n_ubatch=256, cache_dir=cache),
        cache_path(TINY, 1, 8, n_ctx=1024, cache_dir=cache),
        cache_path(TINY.replace(n_ff=256), 1, 8, cache_dir=cache),
    }
    assert base not in others and len(others) == 5


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"schema": "lace.engine/1", "batch": 1}), json.dumps([1, 2])],
    ids=["garbage", "incomplete", "foreign"],
)
def test_corrupt_cache_names_the_file(tmp_path: Path, content: str) -> None:
    path = cache_path(TINY, 1, 8, cache_dir=tmp_path)
    path.write_text(content)
    with pytest.raises(LaceError, match=re.escape(str(path))):
        probe(TINY, 1, 8, cache_dir=tmp_path)


@pytest.mark.parametrize(
    ("batch", "tokens", "n_ubatch", "n_ctx", "fix"),
    [(4, 200, 512, 2048, "n_ubatch"), (4, 200, 1024, 512, "n_ctx"), (0, 8, 512, 512, "batch")],
)
def test_impossible_sizes_name_the_fix(
    tmp_path: Path, batch: int, tokens: int, n_ubatch: int, n_ctx: int, fix: str
) -> None:
    with pytest.raises(LaceError, match=fix):
        probe(TINY, batch, tokens, n_ubatch=n_ubatch, n_ctx=n_ctx, cache_dir=tmp_path)


@pytest.mark.parametrize("name", sorted(ENGINE_CONFIGS))
def test_recorded_dumps_match_a_fresh_probe(cache: Path, name: str) -> None:
    """The recorded dumps the comparison tests read (tests/engine_data.py) are what this
    engine computes: probed afresh at an odd batch and an odd prompt length."""
    want = recorded_run(name, 3)
    if want.llama_version != engine.llama_version():
        pytest.skip(
            f"dumps recorded with llama-cpp-python {want.llama_version}, "
            f"{engine.llama_version()} installed: re-record (python -m tests.engine_data)"
        )
    got = probe(ENGINE_CONFIGS[name], 3, want.prompt_tokens, cache_dir=cache)
    assert got == want


def test_engine_fidelity_cli_prints_only_json(capsys: pytest.CaptureFixture[str]) -> None:
    from concurrency.cli import main

    code = main(["fidelity", "--engine", "--models", "tiny", "--batches", "3", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["summary"] == {
        "configs": 1,
        "node_mismatches": 0,
        "offset_mismatches": 0,
        "compute_tensors_checked": doc["configs"][0]["compute-buffer tensors"],
        "ok": True,
    }
    assert doc["engine"]["n_ubatch"] == 512 and doc["races"]["rows"][0]["batch"] == 3
