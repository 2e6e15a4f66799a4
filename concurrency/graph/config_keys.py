"""The keys of a model config, documented once.

`CONFIG_KEYS` gives each `ModelConfig` key its meaning and unit, its llama.cpp GGUF and
Hugging Face config.json names, and the arches whose config files must give it (keys with no
sensible default — vocabulary, widths, head counts and sizes — are required, so a file never
silently borrows a preset's value). `concurrency.graph.config` renders it for the
`ModelConfig` docstring, `lace models --help` and the README.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

ARCHES = ("qwen35", "qwen35moe", "qwen3next")
MOE_ARCHES = ("qwen35moe", "qwen3next")


@dataclass(frozen=True)
class ConfigKey:
    """One key of a model config: what it means and where its value comes from.

    `required_for` lists the arches whose config files must give the key (all of `ARCHES`
    for keys without a sensible default, none for keys with one); `gguf` is the llama.cpp
    GGUF metadata key (after the `<arch>.` prefix unless it starts with `general.`), `hf`
    the Hugging Face config.json name(s)."""

    name: str
    meaning: str
    required_for: tuple[str, ...] = ()
    gguf: str = ""
    hf: tuple[str, ...] = ()
    default_note: str = ""  # how the default reads in the docs, when not just the value


CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey(
        "name",
        "the config's name, shown in tables and charts",
        ARCHES,
        "general.name",
        default_note="the file name without its extension",
    ),
    ConfigKey(
        "arch",
        "graph builder: qwen35 (dense Qwen3.5), qwen35moe (Qwen3.5 MoE), qwen3next (Qwen3-Next)",
        ARCHES,
        "general.architecture",
        ("model_type",),
    ),
    ConfigKey(
        "n_embd",
        "model width (hidden size), elements",
        ARCHES,
        "embedding_length",
        ("hidden_size",),
    ),
    ConfigKey(
        "n_layer",
        "layers, GDN and full attention together",
        ARCHES,
        "block_count",
        ("num_hidden_layers",),
    ),
    ConfigKey(
        "n_vocab",
        "vocabulary size, tokens (rows of the embedding and output matrices)",
        ARCHES,
        "vocab_size",
        ("vocab_size",),
    ),
    ConfigKey(
        "n_head",
        "full-attention query heads",
        ARCHES,
        "attention.head_count",
        ("num_attention_heads",),
    ),
    ConfigKey(
        "n_head_kv",
        "full-attention key/value heads (n_head is a multiple of it)",
        ARCHES,
        "attention.head_count_kv",
        ("num_key_value_heads",),
    ),
    ConfigKey(
        "head_dim",
        "full-attention head size, elements (keys and values)",
        ARCHES,
        "attention.key_length",
        ("head_dim",),
    ),
    ConfigKey(
        "rope_fraction",
        "fraction of head_dim that RoPE rotates (n_rot = head_dim × it)",
        (),
        "rope.dimension_count ÷ head_dim",
        ("partial_rotary_factor",),
    ),
    ConfigKey(
        "n_ff",
        "dense FFN width, elements (unused by the MoE arches)",
        ("qwen35",),
        "feed_forward_length",
        ("intermediate_size",),
    ),
    ConfigKey(
        "ssm_d_state",
        "GDN head size S, elements (keys and values alike)",
        ARCHES,
        "ssm.state_size",
        ("linear_key_head_dim", "linear_value_head_dim"),
    ),
    ConfigKey(
        "ssm_n_group", "GDN key heads H_k", ARCHES, "ssm.group_count", ("linear_num_key_heads",)
    ),
    ConfigKey(
        "ssm_dt_rank",
        "GDN value heads H_v (a multiple of ssm_n_group)",
        ARCHES,
        "ssm.time_step_rank",
        ("linear_num_value_heads",),
    ),
    ConfigKey(
        "ssm_d_conv",
        "short-conv kernel width W, taps (at least 2)",
        (),
        "ssm.conv_kernel",
        ("linear_conv_kernel_dim",),
    ),
    ConfigKey(
        "full_attention_interval",
        "every k-th layer is full attention, the rest GDN",
        (),
        "full_attention_interval",
        ("full_attention_interval",),
    ),
    ConfigKey(
        "n_expert", "routed experts per MoE layer", MOE_ARCHES, "expert_count", ("num_experts",)
    ),
    ConfigKey(
        "n_expert_used",
        "experts each token is routed to (top-k)",
        MOE_ARCHES,
        "expert_used_count",
        ("num_experts_per_tok",),
    ),
    ConfigKey(
        "n_ff_exp",
        "routed expert FFN width, elements",
        MOE_ARCHES,
        "expert_feed_forward_length",
        ("moe_intermediate_size",),
    ),
    ConfigKey(
        "n_ff_shexp",
        "shared expert FFN width, elements (0: no shared expert)",
        MOE_ARCHES,
        "expert_shared_feed_forward_length",
        ("shared_expert_intermediate_size",),
    ),
    ConfigKey("source", "where the figures come from (free text)"),
    ConfigKey("verified", "true when two independent sources confirm every figure"),
    ConfigKey("unverified_fields", "the keys whose figures are not confirmed (a list)"),
)


def required_keys(arch: str | None = None) -> tuple[str, ...]:
    """The keys a config file must give for `arch` (None: those every arch needs)."""
    return tuple(
        k.name
        for k in CONFIG_KEYS
        if (arch in k.required_for if arch is not None else set(ARCHES) <= set(k.required_for))
    )


# Names users copy from a GGUF dump or a Hugging Face config.json, mapped to LACE's.
KEY_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        **{k.gguf.split(".")[-1]: k.name for k in CONFIG_KEYS if k.gguf and "÷" not in k.gguf},
        **{k.gguf: k.name for k in CONFIG_KEYS if k.gguf and "÷" not in k.gguf},
        **{hf: k.name for k in CONFIG_KEYS for hf in k.hf},
    }
)
