"""Model configurations: the Qwen3.5 family, Qwen3-Next and a tiny test model.

A `ModelConfig` holds exactly the hyper-parameters the llama.cpp graph builders read
(`src/models/qwen35.cpp`, `qwen35moe.cpp`, `qwen3next.cpp`). Figures come from
`shared/reference/gdn-reference.md` §4 and `seed-anatomy.md` §3.5; each preset records its
source and which of its figures are not confirmed by two independent sources.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from concurrency.errors import ConfigError, UnknownNameError

ARCHES = ("qwen35", "qwen35moe", "qwen3next")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of a hybrid Gated DeltaNet / gated full-attention model.

    Names follow llama.cpp's GGUF keys where one exists: `ssm_d_state` is the GDN head size S
    (used for keys and values alike), `ssm_n_group` the key heads H_k, `ssm_dt_rank` the value
    heads H_v, `ssm_d_conv` the conv kernel width.
    """

    name: str
    arch: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    ssm_n_group: int
    ssm_dt_rank: int
    ssm_d_state: int = 128
    ssm_d_conv: int = 4
    full_attention_interval: int = 4
    n_vocab: int = 248_320
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_ff_shexp: int = 0
    rope_fraction: float = 0.25
    source: str = "user"
    verified: bool = False
    unverified_fields: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        validate_config(self)

    # Derived sizes, named as in llama.cpp's hparams.
    @property
    def key_dim(self) -> int:
        """H_k · S: width of the q and k blocks of the qkv projection."""
        return self.ssm_n_group * self.ssm_d_state

    @property
    def value_dim(self) -> int:
        """H_v · S (`ssm_d_inner`): width of v, z and the GDN output."""
        return self.ssm_dt_rank * self.ssm_d_state

    @property
    def conv_dim(self) -> int:
        """Channels of the short conv: q, k and v together (2·key_dim + value_dim)."""
        return 2 * self.key_dim + self.value_dim

    @property
    def n_embd_r(self) -> int:
        """Floats of conv state per sequence: (d_conv − 1) · conv_dim."""
        return (self.ssm_d_conv - 1) * self.conv_dim

    @property
    def n_embd_s(self) -> int:
        """Floats of recurrent state per sequence: S · S · H_v."""
        return self.ssm_d_state * self.ssm_d_state * self.ssm_dt_rank

    @property
    def n_rot(self) -> int:
        """Rotary dimensions of the full-attention heads (partial RoPE)."""
        return int(self.head_dim * self.rope_fraction)

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 0

    def is_recurrent(self, layer: int) -> bool:
        """True for Gated DeltaNet layers: every layer except each `full_attention_interval`-th."""
        return (layer + 1) % self.full_attention_interval != 0

    def replace(self, **changes: object) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        out = dataclasses.asdict(self)
        out["unverified_fields"] = list(self.unverified_fields)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ModelConfig:
        """Build a user config from a mapping (e.g. a JSON file), naming unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown config keys {unknown}; the keys are: {', '.join(sorted(known))}"
            )
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"config is missing required keys {missing}")
        values = dict(data)
        if "unverified_fields" in values:
            values["unverified_fields"] = tuple(values["unverified_fields"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


def validate_config(cfg: ModelConfig) -> None:
    """Raise one ConfigError naming every impossible value of `cfg`."""
    problems: list[str] = []
    if cfg.arch not in ARCHES:
        problems.append(f"arch {cfg.arch!r} is not one of {', '.join(ARCHES)}")
    positive = (
        "n_embd",
        "n_layer",
        "n_head",
        "n_head_kv",
        "head_dim",
        "ssm_n_group",
        "ssm_dt_rank",
        "ssm_d_state",
        "ssm_d_conv",
        "full_attention_interval",
        "n_vocab",
    )
    for name in positive:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            problems.append(f"{name} must be a positive integer, got {value!r}")
    if problems:
        raise ConfigError(f"config {cfg.name!r}: " + "; ".join(problems))
    if cfg.ssm_dt_rank % cfg.ssm_n_group:
        problems.append(
            f"value heads ssm_dt_rank={cfg.ssm_dt_rank} must be a multiple of key heads "
            f"ssm_n_group={cfg.ssm_n_group}"
        )
    if cfg.n_head % cfg.n_head_kv:
        problems.append(
            f"attention heads n_head={cfg.n_head} must be a multiple of n_head_kv={cfg.n_head_kv}"
        )
    if cfg.ssm_d_conv < 2:
        problems.append(f"ssm_d_conv must be at least 2, got {cfg.ssm_d_conv}")
    if not 0 < cfg.rope_fraction <= 1:
        problems.append(f"rope_fraction must be in (0, 1], got {cfg.rope_fraction}")
    if cfg.arch == "qwen35" and (cfg.n_ff <= 0 or cfg.n_expert):
        problems.append("a dense qwen35 config needs n_ff > 0 and n_expert = 0")
    if cfg.arch in ("qwen35moe", "qwen3next"):
        if cfg.n_expert <= 0 or cfg.n_ff_exp <= 0:
            problems.append(f"{cfg.arch} needs n_expert > 0 and n_ff_exp > 0")
        if not 0 < cfg.n_expert_used <= cfg.n_expert:
            problems.append(
                f"n_expert_used must be in 1..n_expert={cfg.n_expert}, got {cfg.n_expert_used}"
            )
        if cfg.n_ff_shexp < 0:
            problems.append(f"n_ff_shexp must be ≥ 0, got {cfg.n_ff_shexp}")
    if problems:
        raise ConfigError(f"config {cfg.name!r}: " + "; ".join(problems))


_GDN = "gdn-reference.md §4"
_SEED = "seed-anatomy.md §3.5"

PRESETS: dict[str, ModelConfig] = {
    c.name: c
    for c in (
        ModelConfig(
            name="qwen3.5-0.8b",
            arch="qwen35",
            n_embd=1024,
            n_layer=24,
            n_head=8,
            n_head_kv=2,
            head_dim=256,
            n_ff=3584,
            ssm_n_group=16,
            ssm_dt_rank=16,
            source=f"HF config.json fixtures and llama.cpp loader ({_GDN} c, d; {_SEED} H, O)",
            verified=True,
        ),
        ModelConfig(
            name="qwen3.5-2b",
            arch="qwen35",
            n_embd=2048,
            n_layer=24,
            n_head=8,
            n_head_kv=2,
            head_dim=256,
            n_ff=6144,
            ssm_n_group=16,
            ssm_dt_rank=16,
            source=f"omegalax registry and test configs ({_GDN} c, d)",
            unverified_fields=("n_ff",),
        ),
        ModelConfig(
            name="qwen3.5-4b",
            arch="qwen35",
            n_embd=2560,
            n_layer=32,
            n_head=16,
            n_head_kv=4,
            head_dim=256,
            n_ff=9216,
            ssm_n_group=16,
            ssm_dt_rank=32,
            source=f"omegalax registry, llama.cpp loader ({_GDN} c)",
            unverified_fields=("n_ff", "ssm_dt_rank", "n_head", "n_head_kv"),
        ),
        ModelConfig(
            name="qwen3.5-9b",
            arch="qwen35",
            n_embd=4096,
            n_layer=32,
            n_head=16,
            n_head_kv=4,
            head_dim=256,
            n_ff=12288,
            ssm_n_group=16,
            ssm_dt_rank=32,
            source=f"transformers Qwen3_5TextConfig defaults, omegalax ({_GDN} c, e)",
            unverified_fields=("n_ff",),
        ),
        ModelConfig(
            name="qwen3.5-27b",
            arch="qwen35",
            n_embd=5120,
            n_layer=64,
            n_head=24,
            n_head_kv=4,
            head_dim=256,
            n_ff=17408,
            ssm_n_group=16,
            ssm_dt_rank=48,
            source=f"several HF config fixtures, slime scripts ({_GDN} c, f, g)",
            verified=True,
        ),
        ModelConfig(
            name="qwen3.5-35b-a3b",
            arch="qwen35moe",
            n_embd=2048,
            n_layer=40,
            n_head=16,
            n_head_kv=2,
            head_dim=256,
            n_ff=0,
            ssm_n_group=16,
            ssm_dt_rank=32,
            n_expert=256,
            n_expert_used=8,
            n_ff_exp=512,
            n_ff_shexp=512,
            source=f"HF fixtures, omegalax, simulator table ({_GDN} c, h)",
            verified=True,
        ),
        ModelConfig(
            name="qwen3.5-122b-a10b",
            arch="qwen35moe",
            n_embd=3072,
            n_layer=48,
            n_head=32,
            n_head_kv=2,
            head_dim=256,
            n_ff=0,
            ssm_n_group=16,
            ssm_dt_rank=64,
            n_expert=256,
            n_expert_used=8,
            n_ff_exp=1024,
            n_ff_shexp=1024,
            source=f"omegalax registry, test fixtures ({_GDN} c, g)",
            unverified_fields=("ssm_dt_rank", "n_ff_exp", "n_ff_shexp"),
        ),
        ModelConfig(
            name="qwen3.5-397b-a17b",
            arch="qwen35moe",
            n_embd=4096,
            n_layer=60,
            n_head=32,
            n_head_kv=2,
            head_dim=256,
            n_ff=0,
            ssm_n_group=16,
            ssm_dt_rank=64,
            n_expert=512,
            n_expert_used=10,
            n_ff_exp=1024,
            n_ff_shexp=1024,
            source=f"omegalax, simulator table, Megatron-Bridge fixture ({_GDN} c, h, i)",
            unverified_fields=("n_embd", "n_head", "n_head_kv", "ssm_dt_rank"),
        ),
        ModelConfig(
            name="qwen3-next-80b-a3b",
            arch="qwen3next",
            n_embd=2048,
            n_layer=48,
            n_head=16,
            n_head_kv=2,
            head_dim=256,
            n_ff=0,
            ssm_n_group=16,
            ssm_dt_rank=32,
            n_expert=512,
            n_expert_used=10,
            n_ff_exp=512,
            n_ff_shexp=512,
            source=f"transformers Qwen3NextConfig defaults and a config.json copy ({_GDN} a, b)",
            verified=True,
        ),
        # The tiny model of shared/reference/llama-graph/: small enough to run everything on a CPU.
        ModelConfig(
            name="tiny",
            arch="qwen35",
            n_embd=256,
            n_layer=4,
            n_head=4,
            n_head_kv=2,
            head_dim=64,
            n_ff=512,
            ssm_n_group=2,
            ssm_dt_rank=4,
            ssm_d_state=32,
            n_vocab=64,
            source="LACE test model; the config of the llama.cpp graph dump in shared/reference",
            verified=True,
        ),
    )
}


def scaled_down(
    cfg: ModelConfig, *, n_embd: int = 256, layers: int = 4, head_size: int = 16, n_vocab: int = 64
) -> ModelConfig:
    """A small model with `cfg`'s head structure (attention heads and KV heads, GDN key and
    value heads, experts and experts used) but narrow widths and `layers` layers, so that a
    random-weight GGUF of it loads in a CPU engine in seconds."""
    moe = cfg.is_moe
    return cfg.replace(
        name=f"{cfg.name}-scaled",
        n_embd=n_embd,
        n_layer=min(layers, cfg.n_layer),
        head_dim=head_size * 2,
        ssm_d_state=head_size,
        n_ff=0 if moe else 2 * n_embd,
        n_vocab=n_vocab,
        n_expert=min(cfg.n_expert, 8) if moe else 0,
        n_expert_used=min(cfg.n_expert_used, 4) if moe else 0,
        n_ff_exp=64 if moe else 0,
        n_ff_shexp=64 if moe and cfg.n_ff_shexp else 0,
        source=f"scaled down from {cfg.name} (head structure kept)",
        verified=False,
        unverified_fields=("widths scaled down",),
    )


def load_config(path: str | Path) -> ModelConfig:
    """A user config from a JSON file with ModelConfig's keys (see `lace models --format json`
    for examples); a missing or corrupt file gives one clear error."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold one JSON object of ModelConfig keys")
    try:
        return ModelConfig.from_dict(data)
    except TypeError as exc:
        raise ConfigError(f"config file {p}: {exc}") from None


def get_config(name_or_config: str | ModelConfig) -> ModelConfig:
    """A preset by name (case-insensitive), a path to a JSON config file, or the given config
    unchanged."""
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    if str(name_or_config).endswith(".json"):
        return load_config(name_or_config)
    key = str(name_or_config).strip().lower()
    if key not in PRESETS:
        raise UnknownNameError("model", name_or_config, sorted(PRESETS))
    return PRESETS[key]
