"""A random-weight GGUF of a `ModelConfig`: every key and tensor the vendored llama.cpp loader
needs for qwen35, qwen35moe and qwen3next, with a vocabulary that needs no files."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from concurrency.errors import LaceError, MissingToolError
from concurrency.graph.config import ModelConfig

GGUF_HINT = "install the GGUF writer with `make oracle` (or `.venv/bin/pip install 'gguf>=0.19'`)"


def _import_gguf() -> ModuleType:
    try:
        import gguf
    except ImportError:
        raise MissingToolError(f"writing a GGUF needs the `gguf` package; {GGUF_HINT}") from None
    return gguf


def gguf_tensor_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of the GGUF for `cfg`, in file order, with its ggml shape (ne, fastest
    first), named and sized as the vendored loader's `load_arch_tensors` asks for them."""
    c = cfg
    d, nh, nkv, e = c.head_dim, c.n_head, c.n_head_kv, c.n_embd
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (e, c.n_vocab),
        "output_norm.weight": (e,),
        "output.weight": (e, c.n_vocab),
    }
    shexp = c.n_ff_shexp or c.n_ff
    if c.is_moe and shexp <= 0:
        raise LaceError(
            f"config {c.name!r}: the {c.arch} loader needs shared experts; set n_ff_shexp > 0"
        )
    for il in range(c.n_layer):
        b = f"blk.{il}"
        shapes[f"{b}.attn_norm.weight"] = (e,)
        shapes[f"{b}.post_attention_norm.weight"] = (e,)
        if c.is_recurrent(il):
            shapes[f"{b}.attn_qkv.weight"] = (e, c.conv_dim)
            shapes[f"{b}.attn_gate.weight"] = (e, c.value_dim)
            shapes[f"{b}.ssm_conv1d.weight"] = (c.ssm_d_conv, c.conv_dim)
            shapes[f"{b}.ssm_dt.bias"] = (c.ssm_dt_rank,)
            shapes[f"{b}.ssm_a"] = (c.ssm_dt_rank,)
            if c.arch == "qwen3next":
                shapes[f"{b}.ssm_ba.weight"] = (e, 2 * c.ssm_dt_rank)
            else:
                shapes[f"{b}.ssm_beta.weight"] = (e, c.ssm_dt_rank)
                shapes[f"{b}.ssm_alpha.weight"] = (e, c.ssm_dt_rank)
            shapes[f"{b}.ssm_norm.weight"] = (c.ssm_d_state,)
            shapes[f"{b}.ssm_out.weight"] = (c.value_dim, e)
        else:
            shapes[f"{b}.attn_q.weight"] = (e, 2 * d * nh)  # query and output gate
            shapes[f"{b}.attn_k.weight"] = (e, d * nkv)
            shapes[f"{b}.attn_v.weight"] = (e, d * nkv)
            shapes[f"{b}.attn_output.weight"] = (d * nh, e)
            shapes[f"{b}.attn_q_norm.weight"] = (d,)
            shapes[f"{b}.attn_k_norm.weight"] = (d,)
        if c.is_moe:
            shapes[f"{b}.ffn_gate_inp.weight"] = (e, c.n_expert)
            shapes[f"{b}.ffn_gate_exps.weight"] = (e, c.n_ff_exp, c.n_expert)
            shapes[f"{b}.ffn_up_exps.weight"] = (e, c.n_ff_exp, c.n_expert)
            shapes[f"{b}.ffn_down_exps.weight"] = (c.n_ff_exp, e, c.n_expert)
            shapes[f"{b}.ffn_gate_inp_shexp.weight"] = (e,)
            shapes[f"{b}.ffn_gate_shexp.weight"] = (e, shexp)
            shapes[f"{b}.ffn_up_shexp.weight"] = (e, shexp)
            shapes[f"{b}.ffn_down_shexp.weight"] = (shexp, e)
        else:
            shapes[f"{b}.ffn_gate.weight"] = (e, c.n_ff)
            shapes[f"{b}.ffn_up.weight"] = (e, c.n_ff)
            shapes[f"{b}.ffn_down.weight"] = (c.n_ff, e)
    return shapes


def _random_tensor(name: str, ne: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Small random f32 values shaped for GGUF (numpy order is ne reversed): norms near 1,
    ssm_a negative (it is −exp(A_log)), biases and matrices with a small spread."""
    shape = tuple(reversed(ne))
    if name.endswith("norm.weight"):
        data = 1.0 + 0.02 * rng.standard_normal(shape)
    elif name.endswith(".ssm_a"):
        data = -np.exp(rng.uniform(-1.0, 1.0, shape))
    elif name.endswith(".bias"):
        data = 0.1 * rng.standard_normal(shape)
    elif name.endswith("ssm_conv1d.weight"):
        data = 0.2 * rng.standard_normal(shape)
    else:
        data = 0.02 * rng.standard_normal(shape)
    return np.ascontiguousarray(data, dtype=np.float32)


def _rope_sections(n_rot: int) -> list[int]:
    """M-RoPE sections (pairs of rotary dims per position axis) in Qwen3.5's 11:11:10 ratio."""
    pairs = n_rot // 2
    t = round(pairs * 11 / 32)
    h = round(pairs * 11 / 32)
    return [t, h, pairs - t - h, 0]


#: Storage types `write_gguf` offers for the weight matrices.
MATRIX_TYPES = ("f32", "f16")
#: Values in the random pool f16 matrices are tiled from (a 27B-width model holds ~1.5 G).
_POOL_VALUES = 1 << 22


def _tiled_f16(ne: tuple[int, ...], pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A matrix of `_random_tensor`'s default spread, f16, tiled from `pool` at a random
    offset: seconds for a multi-gigabyte model, where drawing every value takes minutes."""
    n = int(np.prod(ne))
    start = int(rng.integers(0, pool.size))
    reps = -(-(start + n) // pool.size)
    flat = np.tile(pool, reps)[start : start + n] if reps > 1 else pool[start : start + n]
    return np.ascontiguousarray(flat.reshape(tuple(reversed(ne))))


def write_gguf(cfg: ModelConfig, path: Path, seed: int = 0, *, matrix_type: str = "f32") -> None:
    """Write a random-weight GGUF of `cfg` that the vendored llama.cpp loads as is.

    Metadata keys are those `llama-arch.cpp` names and the qwen35/qwen35moe/qwen3next
    `load_arch_hparams` read; the vocabulary is `no_vocab` with `n_vocab` dummy tokens.
    matrix_type "f32" draws every value; "f16" stores the weight matrices (not the norms,
    biases, `ssm_a` or the conv kernel, which stay f32 as the converter keeps them) in f16,
    tiled from one random pool of the same spread.
    """
    if matrix_type not in MATRIX_TYPES:
        known = ", ".join(MATRIX_TYPES)
        raise LaceError(f"matrix_type must be one of {known}, not {matrix_type!r}")
    gguf = _import_gguf()
    arch, c = cfg.arch, cfg
    shapes = gguf_tensor_shapes(cfg)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch)
    u32 = w.add_uint32
    w.add_string("general.name", c.name)
    u32(f"{arch}.vocab_size", c.n_vocab)
    u32(f"{arch}.context_length", 4096)
    u32(f"{arch}.embedding_length", c.n_embd)
    u32(f"{arch}.block_count", c.n_layer)
    u32(f"{arch}.feed_forward_length", c.n_ff)
    u32(f"{arch}.attention.head_count", c.n_head)
    u32(f"{arch}.attention.head_count_kv", c.n_head_kv)
    u32(f"{arch}.attention.key_length", c.head_dim)
    u32(f"{arch}.attention.value_length", c.head_dim)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    u32(f"{arch}.rope.dimension_count", c.n_rot)
    w.add_float32(f"{arch}.rope.freq_base", 10_000_000.0)
    if arch != "qwen3next":
        w.add_key_value(
            f"{arch}.rope.dimension_sections",
            _rope_sections(c.n_rot),
            gguf.GGUFValueType.ARRAY,
            sub_type=gguf.GGUFValueType.INT32,
        )
    u32(f"{arch}.ssm.conv_kernel", c.ssm_d_conv)
    u32(f"{arch}.ssm.inner_size", c.value_dim)
    u32(f"{arch}.ssm.state_size", c.ssm_d_state)
    u32(f"{arch}.ssm.time_step_rank", c.ssm_dt_rank)
    u32(f"{arch}.ssm.group_count", c.ssm_n_group)
    u32(f"{arch}.full_attention_interval", c.full_attention_interval)
    if c.is_moe:
        u32(f"{arch}.expert_count", c.n_expert)
        u32(f"{arch}.expert_used_count", c.n_expert_used)
        u32(f"{arch}.expert_feed_forward_length", c.n_ff_exp)
        u32(f"{arch}.expert_shared_feed_forward_length", c.n_ff_shexp or c.n_ff)
    w.add_string("tokenizer.ggml.model", "no_vocab")
    rng = np.random.default_rng(seed)
    pool = None
    if matrix_type == "f16":
        pool = (0.02 * rng.standard_normal(_POOL_VALUES)).astype(np.float16)
    for name, ne in shapes.items():
        matrix = len(ne) >= 2 and not name.endswith("ssm_conv1d.weight")
        if pool is not None and matrix:
            w.add_tensor(name, _tiled_f16(ne, pool, rng))
        else:
            w.add_tensor(name, _random_tensor(name, ne, rng))
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()


# ---------------------------------------------------------------------------------------------
# Probing
