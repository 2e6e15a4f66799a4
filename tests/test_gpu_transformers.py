"""The GPU executor's GDN and attention layers against transformers' Qwen3.5 modules with the
same random weights, on the device (the modules in float64; transformers still computes the
GDN core and the softmax in float32, so the tolerances are fp32's).

Mapping from LACE's llama.cpp-style weights to the modules (gdn-reference §1.1; LACE's builders
keep transformers' grouped head order, value head h reading key head h // (H_v/H_k)):
`attn_qkv` → in_proj_qkv, `attn_gate` → in_proj_z, `ssm_beta` → in_proj_b, `ssm_alpha` →
in_proj_a, `ssm_conv1d` [C, W] → conv1d.weight[:, 0, :], `ssm_a` = −exp(A_log) → A_log =
log(−ssm_a), `ssm_dt.bias` → dt_bias, `ssm_norm` → norm.weight (used as is), `ssm_out` →
out_proj; `attn_q` ([query | gate] per head) → q_proj, `attn_k/v/output` → k/v/o_proj, and the
zero-centred q/k norms: `attn_q_norm` = 1 + q_norm.weight. The layer is `x + mixer(norm(x))`
with LACE's attn_norm (a plain RMSNorm times its weight).
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
from gpu_cases import CONFIGS, layer_graph, planned, report

from concurrency.execute.gpu import (
    build_launch_plan,
    check_gpu,
    reference_inputs,
    relative_errors,
    run_gpu,
)
from concurrency.execute.numpy_ops import ROPE_FREQ_BASE

pytestmark = pytest.mark.gpu

#: transformers runs the gated delta rule, the gates and the gated norm in float32 even in a
#: float64 module (gdn-reference §1.4, §2.1); fp32 vs fp64 measured ≈ 3e-7.
HF_TOL_GDN = 1e-5
HF_TOL_ATTN = 3e-3  # LACE's KV cache is f16 (as llama.cpp's)


def _hf_config(kind: str):
    transformers = pytest.importorskip("transformers")
    cfg = CONFIGS["tiny"]
    config = transformers.Qwen3_5TextConfig(
        hidden_size=cfg.n_embd,
        num_hidden_layers=1,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_head_kv,
        head_dim=cfg.head_dim,
        intermediate_size=cfg.n_ff,
        vocab_size=cfg.n_vocab,
        linear_num_key_heads=cfg.ssm_n_group,
        linear_num_value_heads=cfg.ssm_dt_rank,
        linear_key_head_dim=cfg.ssm_d_state,
        linear_value_head_dim=cfg.ssm_d_state,
        linear_conv_kernel_dim=cfg.ssm_d_conv,
        rms_norm_eps=1e-6,
        layer_types=["linear_attention" if kind == "gdn" else "full_attention"],
    )
    with contextlib.suppress(Exception):  # some versions guard it; eager is the default
        config._attn_implementation = "eager"
    return config


def _torch():
    torch = pytest.importorskip("torch")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def _weight(values, name):
    return np.asarray(values[name], dtype=np.float64)


def _layer_input(torch, values, n_embd):
    x = torch.tensor(
        _weight(values, "inp_layer").reshape(-1, n_embd), dtype=torch.float64, device="cuda"
    )
    w = torch.tensor(
        _weight(values, "blk.0.attn_norm.weight").reshape(-1), dtype=torch.float64, device="cuda"
    )
    h = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6) * w
    return x, h


def _compare(record_property, lace: np.ndarray, hf: np.ndarray, tol: float, label: str) -> None:
    err = relative_errors({label: hf}, {label: lace.reshape(hf.shape)})[label]
    report(record_property, err, tol, label)
    assert err <= tol, f"{label}: LACE vs transformers {err:.2e} > {tol}"


def _gdn_state_dict(values) -> dict[str, np.ndarray]:
    """transformers' Qwen3_5GatedDeltaNet parameters from LACE's weights (module doc)."""
    return {
        "in_proj_qkv.weight": _weight(values, "blk.0.attn_qkv.weight"),
        "in_proj_z.weight": _weight(values, "blk.0.attn_gate.weight"),
        "in_proj_b.weight": _weight(values, "blk.0.ssm_beta.weight"),
        "in_proj_a.weight": _weight(values, "blk.0.ssm_alpha.weight"),
        "conv1d.weight": _weight(values, "blk.0.ssm_conv1d.weight"),  # [C, W] → [C, 1, W]
        "A_log": np.log(-_weight(values, "blk.0.ssm_a")),
        "dt_bias": _weight(values, "blk.0.ssm_dt.bias"),
        "norm.weight": _weight(values, "blk.0.ssm_norm.weight"),
        "out_proj.weight": _weight(values, "blk.0.ssm_out.weight"),
    }


def _load(torch, module, state: dict[str, np.ndarray]) -> None:
    """Copy every value into the module's parameter of that name, in the parameter's shape
    (LACE's leaves arrive in ggml's 4-D NumPy order: reshape, never broadcast)."""
    for name, value in state.items():
        param = module.get_parameter(name)
        if value.size != param.numel():
            raise AssertionError(f"{name}: {value.shape} does not fill {tuple(param.shape)}")
        param.copy_(torch.tensor(value.reshape(tuple(param.shape)), dtype=param.dtype))


def _gdn_module(torch, modeling, values):
    config = _hf_config("gdn")
    module = modeling.Qwen3_5GatedDeltaNet(config, layer_idx=0).to("cuda", torch.float64)
    with torch.no_grad():
        _load(torch, module, _gdn_state_dict(values))
    return config, module


@pytest.mark.parametrize("tokens", [12, 65])
def test_gdn_layer_matches_transformers(tokens: int, record_property) -> None:
    torch = _torch()
    modeling = pytest.importorskip("transformers.models.qwen3_5.modeling_qwen3_5")
    graph = layer_graph("tiny", "gdn", "prefill", 1, tokens)  # one fresh sequence (state zeroed)
    schedule, plan = planned(graph, "happens_before")
    values = reference_inputs(graph, seed=11)
    lace = run_gpu(build_launch_plan(graph, schedule, plan), values, "graph")["attn_residual-0"]
    config, module = _gdn_module(torch, modeling, values)
    with torch.no_grad():
        x, h = _layer_input(torch, values, config.hidden_size)
        hf = (x + module(h[None])[0]).cpu().numpy()
    _compare(record_property, lace, hf, HF_TOL_GDN, f"gdn-T{tokens}")


@pytest.mark.parametrize("tokens", [12, 65])
def test_attention_layer_matches_transformers(tokens: int, record_property) -> None:
    torch = _torch()
    modeling = pytest.importorskip("transformers.models.qwen3_5.modeling_qwen3_5")
    cfg = CONFIGS["tiny"]
    graph = layer_graph("tiny", "attn", "prefill", 1, tokens)
    schedule, plan = planned(graph, "happens_before")
    values = reference_inputs(graph, seed=12)
    lace = run_gpu(build_launch_plan(graph, schedule, plan), values, "graph")["attn_residual-0"]

    config = _hf_config("attn")
    module = modeling.Qwen3_5Attention(config, layer_idx=0).to("cuda", torch.float64)
    sd = {
        "q_proj.weight": _weight(values, "blk.0.attn_q.weight"),
        "k_proj.weight": _weight(values, "blk.0.attn_k.weight"),
        "v_proj.weight": _weight(values, "blk.0.attn_v.weight"),
        "o_proj.weight": _weight(values, "blk.0.attn_output.weight"),
        "q_norm.weight": _weight(values, "blk.0.attn_q_norm.weight").reshape(-1) - 1.0,
        "k_norm.weight": _weight(values, "blk.0.attn_k_norm.weight").reshape(-1) - 1.0,
    }
    n_rot = cfg.n_rot
    pos = torch.arange(tokens, dtype=torch.float64, device="cuda")
    inv_freq = 1.0 / (
        ROPE_FREQ_BASE ** (torch.arange(0, n_rot, 2, dtype=torch.float64, device="cuda") / n_rot)
    )
    emb = torch.cat([pos[:, None] * inv_freq[None], pos[:, None] * inv_freq[None]], dim=-1)[None]
    causal = torch.full((tokens, tokens), -math.inf, dtype=torch.float64, device="cuda").triu(1)[
        None, None
    ]
    with torch.no_grad():
        _load(torch, module, sd)
        x, h = _layer_input(torch, values, config.hidden_size)
        out = module(h[None], position_embeddings=(emb.cos(), emb.sin()), attention_mask=causal)[0]
        hf = (x + out[0]).cpu().numpy()
    _compare(record_property, lace, hf, HF_TOL_ATTN, f"attn-T{tokens}")


def test_numpy_reference_matches_transformers_gdn(record_property) -> None:
    """The float64 NumPy reference itself against the module (separates a mapping error from a
    kernel error when the GPU comparison fails)."""
    torch = _torch()
    modeling = pytest.importorskip("transformers.models.qwen3_5.modeling_qwen3_5")
    from concurrency.execute.numpy_arena import reference_run

    graph = layer_graph("tiny", "gdn", "prefill", 1, 12)
    values = reference_inputs(graph, seed=11)
    ref = reference_run(graph, values)["attn_residual-0"]
    config, module = _gdn_module(torch, modeling, values)
    with torch.no_grad():
        x, h = _layer_input(torch, values, config.hidden_size)
        hf = (x + module(h[None])[0]).cpu().numpy()
    _compare(record_property, ref, hf, HF_TOL_GDN, "numpy-gdn-T12")


def test_check_gpu_is_used_consistently() -> None:
    """check_gpu and run_gpu agree on the same plan (guards the helpers these tests use)."""
    graph = layer_graph("tiny", "gdn", "decode", 1)
    schedule, plan = planned(graph, "happens_before")
    check = check_gpu(graph, schedule, plan, launch="eager", seed=13)
    assert check.ok, dict(check.errors)
