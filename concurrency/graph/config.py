"""Model configurations: the Qwen3.5 family, Qwen3-Next and a tiny test model.

A `ModelConfig` holds exactly the hyper-parameters the llama.cpp graph builders read
(`src/models/qwen35.cpp`, `qwen35moe.cpp`, `qwen3next.cpp`). Figures come from
`shared/reference/gdn-reference.md` §4 and `seed-anatomy.md` §3.5; each preset records its
source and which of its figures are not confirmed by two independent sources.

`config_keys.CONFIG_KEYS` documents every key once (meaning and unit, GGUF and Hugging Face
names, default or "required"); the `ModelConfig` docstring, `config_keys_text()` (for
`lace models --help`) and `config_keys_markdown()` (for the README) are all made from it. A
user config is a JSON or YAML file of these keys (`get_config` with a path; `config_file`
reads it): a missing key that has no sensible default is an error naming it, never a silently
borrowed preset value.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from concurrency.errors import ConfigError, UnknownNameError
from concurrency.graph.config_keys import (
    ARCHES,
    CONFIG_KEYS,
    KEY_ALIASES,
    MOE_ARCHES,
    ConfigKey,
    required_keys,
)

_FILE_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]*")
#: File extensions a config file may have, and the format of each.
CONFIG_SUFFIXES = {".json": "JSON", ".yaml": "YAML", ".yml": "YAML"}


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Hyper-parameters of a hybrid Gated DeltaNet / gated full-attention model.

    Names follow llama.cpp's GGUF keys where one exists: `ssm_d_state` is the GDN head size S
    (used for keys and values alike), `ssm_n_group` the key heads H_k, `ssm_dt_rank` the value
    heads H_v, `ssm_d_conv` the conv kernel width. Every field is a keyword argument; a config
    is checked when made (one ConfigError names every impossible value).
    """

    name: str
    arch: str
    n_embd: int
    n_layer: int
    n_vocab: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rope_fraction: float = 0.25
    n_ff: int = 0
    ssm_d_state: int
    ssm_n_group: int
    ssm_dt_rank: int
    ssm_d_conv: int = 4
    full_attention_interval: int = 4
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_ff_shexp: int = 0
    source: str = "user"
    verified: bool = False
    unverified_fields: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if isinstance(self.unverified_fields, list):
            object.__setattr__(self, "unverified_fields", tuple(self.unverified_fields))
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
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """Every key, as a JSON- and YAML-friendly mapping that `from_dict` reads back."""
        out = dataclasses.asdict(self)
        out["unverified_fields"] = list(self.unverified_fields)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ModelConfig:
        """A user config from a mapping of `CONFIG_KEYS` (e.g. a parsed JSON or YAML file).

        Unknown keys are named (with the LACE name when the key is a GGUF or Hugging Face
        name); missing required keys — those without a sensible default, see
        `required_keys` — are named all together; wrong values are named by `validate_config`.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"a config is a mapping of keys to values, not {type(data).__name__}; "
                "`lace models --help` lists the keys"
            )
        unknown = [k for k in data if k not in _FIELDS]
        if unknown:
            raise ConfigError(
                "unknown config keys: "
                + ", ".join(_unknown_key_hint(k) for k in unknown)
                + "; `lace models --help` lists the keys"
            )
        arch = data.get("arch")
        if "arch" in data and arch not in ARCHES:
            raise ConfigError(f"arch {arch!r} is not one of {', '.join(ARCHES)}")
        needed = required_keys(arch if isinstance(arch, str) else None)
        missing = [k for k in needed if k not in data]
        if missing:
            for_arch = f" (for arch {arch})" if isinstance(arch, str) else ""
            raise ConfigError(
                f"config is missing required keys{for_arch}: {', '.join(missing)}; these have "
                "no sensible default (`lace models --help` says what each means)"
            )
        values: dict[str, Any] = dict(data)
        fields = values.get("unverified_fields")
        if isinstance(fields, list):
            values["unverified_fields"] = tuple(fields)
        return cls(**values)


_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


def _unknown_key_hint(key: object) -> str:
    """`key` quoted, with the LACE key it probably means."""
    if isinstance(key, str):
        if key in KEY_ALIASES and KEY_ALIASES[key] != key:
            return f"{key!r} (LACE calls it {KEY_ALIASES[key]})"
        close = difflib.get_close_matches(key, _FIELDS, n=1)
        if close:
            return f"{key!r} (did you mean {close[0]}?)"
    return repr(key)


def _default_text(key: ConfigKey) -> str:
    if key.default_note:
        return key.default_note
    default = next(f.default for f in dataclasses.fields(ModelConfig) if f.name == key.name)
    if isinstance(default, bool):
        text = str(default).lower()
    elif default == ():
        text = "[]"
    elif isinstance(default, str):
        text = f'"{default}"'
    else:
        text = str(default)
    if not key.required_for:
        return text
    if set(key.required_for) == set(ARCHES):
        return "required"
    rest = [a for a in ARCHES if a not in key.required_for]
    return f"required for {', '.join(key.required_for)}; {text} for {', '.join(rest)}"


def _gguf_text(key: ConfigKey) -> str:
    if not key.gguf:
        return ""
    return key.gguf if key.gguf.startswith("general.") else f"<arch>.{key.gguf}"


def config_keys_text(width: int = 100) -> str:
    """Every config key as plain text for a terminal (`lace models --help`): per key its
    default or "required", its meaning and unit, and its GGUF and Hugging Face names."""
    lines = [
        "Config files (JSON or YAML, one mapping of these keys; `lace models --format json`",
        "prints every preset as an example). A key marked required has no sensible default:",
        "a file without it is an error naming it.",
        "",
    ]
    pad = max(len(k.name) for k in CONFIG_KEYS) + 2
    for k in CONFIG_KEYS:
        names = "; ".join(
            part
            for part in (
                f"GGUF {_gguf_text(k)}" if k.gguf else "",
                f"HF {' / '.join(k.hf)}" if k.hf else "",
            )
            if part
        )
        default = _default_text(k)
        default = default.capitalize() if default.startswith("required") else f"Default: {default}"
        text = f"{k.meaning}. {default}." + (f" [{names}]" if names else "")
        lines.append(
            textwrap.fill(
                text,
                width=width,
                initial_indent=f"  {k.name:<{pad}}",
                subsequent_indent=" " * (pad + 4),
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)


def config_keys_markdown() -> str:
    """Every config key as a Markdown table (for the README)."""
    rows = [
        "| key | default | meaning (unit) | GGUF key | Hugging Face config.json |",
        "|---|---|---|---|---|",
    ]
    for k in CONFIG_KEYS:
        gguf = f"`{_gguf_text(k)}`" if k.gguf else "—"
        hf = ", ".join(f"`{h}`" for h in k.hf) or "—"
        rows.append(f"| `{k.name}` | {_default_text(k)} | {k.meaning} | {gguf} | {hf} |")
    return "\n".join(rows)


def _type_problems(cfg: ModelConfig) -> list[str]:
    """Values of the wrong type (a string for a number, a float for a count, ...)."""
    problems = []
    for name in ("name", "arch", "source"):
        value = getattr(cfg, name)
        if not isinstance(value, str) or (name != "source" and not value.strip()):
            problems.append(f"{name} must be a non-empty string, got {value!r}")
    if not isinstance(cfg.verified, bool):
        problems.append(f"verified must be true or false, got {cfg.verified!r}")
    fields = cfg.unverified_fields
    if not isinstance(fields, tuple) or not all(isinstance(x, str) for x in fields):
        problems.append(f"unverified_fields must be a list of key names, got {fields!r}")
    rope = cfg.rope_fraction
    if isinstance(rope, bool) or not isinstance(rope, int | float):
        problems.append(f"rope_fraction must be a number, got {rope!r}")
    for name in _COUNTS:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{name} must be an integer, got {value!r}")
    return problems


_POSITIVE = (
    "n_embd",
    "n_layer",
    "n_vocab",
    "n_head",
    "n_head_kv",
    "head_dim",
    "ssm_d_state",
    "ssm_n_group",
    "ssm_dt_rank",
    "ssm_d_conv",
    "full_attention_interval",
)
_NON_NEGATIVE = ("n_ff", "n_expert", "n_expert_used", "n_ff_exp", "n_ff_shexp")
_COUNTS = _POSITIVE + _NON_NEGATIVE


def validate_config(cfg: ModelConfig) -> None:
    """Raise one ConfigError naming every impossible value of `cfg`."""
    problems = _type_problems(cfg)
    if problems:
        raise ConfigError(f"config {cfg.name!r}: " + "; ".join(problems))
    if cfg.arch not in ARCHES:
        problems.append(f"arch {cfg.arch!r} is not one of {', '.join(ARCHES)}")
    for name in _POSITIVE:
        if getattr(cfg, name) <= 0:
            problems.append(f"{name} must be a positive integer, got {getattr(cfg, name)}")
    for name in _NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            problems.append(f"{name} must be ≥ 0, got {getattr(cfg, name)}")
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
        problems.append(
            f"a dense qwen35 config needs n_ff > 0 (the FFN width) and n_expert = 0, got "
            f"n_ff={cfg.n_ff}, n_expert={cfg.n_expert}"
        )
    if cfg.arch in MOE_ARCHES:
        if cfg.n_expert <= 0 or cfg.n_ff_exp <= 0:
            problems.append(f"{cfg.arch} needs n_expert > 0 and n_ff_exp > 0")
        if not 0 < cfg.n_expert_used <= cfg.n_expert:
            problems.append(
                f"n_expert_used must be in 1..n_expert={cfg.n_expert}, got {cfg.n_expert_used}"
            )
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
            ssm_d_state=128,
            n_vocab=248_320,
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
            ssm_d_state=128,
            n_vocab=248_320,
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
            ssm_d_state=128,
            n_vocab=248_320,
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
            ssm_d_state=128,
            n_vocab=248_320,
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
            ssm_d_state=128,
            n_vocab=248_320,
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
            ssm_d_state=128,
            n_vocab=248_320,
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
            ssm_d_state=128,
            n_vocab=248_320,
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
            ssm_d_state=128,
            n_vocab=248_320,
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
            ssm_d_state=128,
            # Qwen3-Next keeps Qwen3's tokenizer: 151 936 tokens, not Qwen3.5's 248 320.
            n_vocab=151_936,
            n_expert=512,
            n_expert_used=10,
            n_ff_exp=512,
            n_ff_shexp=512,
            source=(
                f"transformers Qwen3NextConfig defaults and a config.json copy ({_GDN} a, b); "
                "n_vocab from the Qwen3NextConfig defaults only"
            ),
            unverified_fields=("n_vocab",),
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


def get_config(name_or_config: str | PathLike[str] | ModelConfig) -> ModelConfig:
    """A preset by name (case-insensitive), a config file (a path: `.json`, `.yaml` or
    `.yml`, see `concurrency.graph.config_file.load_config`), or the given config unchanged.

    A string is a preset when it names one, else a file when it looks like a path (an
    extension such as `.json` — not `.5-27b` — a slash, or an existing file)."""
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    if isinstance(name_or_config, PathLike):
        from concurrency.graph.config_file import load_config

        return load_config(name_or_config)
    if not isinstance(name_or_config, str):
        raise ConfigError(
            f"a model is a preset name, a config file path or a ModelConfig, not "
            f"{type(name_or_config).__name__}"
        )
    key = name_or_config.strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    p = Path(name_or_config)
    if _FILE_SUFFIX.fullmatch(p.suffix) or "/" in name_or_config or p.exists():
        from concurrency.graph.config_file import load_config

        return load_config(p)
    raise UnknownNameError(
        "model", name_or_config, sorted(PRESETS), hint="or the path of a .json or .yaml file"
    )


ModelConfig.__doc__ = (
    f"{ModelConfig.__doc__}\n    Keys (`CONFIG_KEYS`; the same table as `lace models --help`):\n\n"
    + textwrap.indent(config_keys_text(width=92), "    ")
    + "\n"
)
