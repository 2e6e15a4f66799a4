"""Sweep cases: one graph × one policy × one GPU, and the grid that expands into them.

A `SweepCase` names everything one row of a sweep depends on. It is checked and put in a
canonical form when made — names validated, aliases resolved (`h100` is `h100-sxm`), the
defaults that depend on other fields filled in (a stack's layer count, prefill's tokens, the
flow) — so two spellings of the same case are the same case, with the same `id`.

The id is a hash of the case's fields and of its model's config (a preset's or a config
file's keys), so it is stable across processes, machines and LACE runs, and a config file
edited between two runs makes new cases instead of matching the old rows. A case carries its
resolved `ModelConfig`, so a worker on another machine needs no copy of the file.

Names that do not exist (a policy, GPU, model, layer kind, mode, flow or detector) are bad
input and raise a `LaceError` when the case is made; a combination that cannot be built (a
stack deeper than the model, decode with several tokens, an engine context whose n_ctx is not
a multiple of 256) is a failed case, recorded as such when it runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from concurrency.errors import ConfigError, LaceError, UnknownNameError
from concurrency.graph.branches import DETECTORS
from concurrency.graph.builders import DEFAULT_PREFILL_TOKENS, LAYER_KINDS, MODES
from concurrency.graph.config import PRESETS, ModelConfig, get_config
from concurrency.graph.schedule import DEFAULT_MAX_STREAMS
from concurrency.memory.engine_flow import DEFAULT_N_CTX, DEFAULT_N_UBATCH, FLOWS
from concurrency.memory.policies import DEFAULT_ALIGNMENT, POLICIES
from concurrency.timing.gpus import get_gpu
from concurrency.timing.timeline import LAUNCH_MODES

ALL = "all"

#: The fields that decide a case's graph, schedule and memory context: cases that agree on
#: these share one graph build, one branch detection, one schedule and one engine context.
CONTEXT_FIELDS = (
    "model",
    "layer",
    "layers",
    "mode",
    "batch",
    "tokens",
    "max_streams",
    "flow",
    "detector",
    "n_ctx",
    "n_ubatch",
    "alignment",
)
#: The fields that decide a simulation on top of the context (the policy does not).
SIMULATION_FIELDS = ("gpu", "launch", "weight_bytes_per_param")


@dataclass(frozen=True)
class SweepCase:
    """One row of a sweep: a graph planned by one policy and simulated on one GPU spec.

    layers: decoder layers of a `stack` (default: all of the model's; 1 for single layers).
    tokens: per sequence (1 in decode, default 64 in prefill). flow: "engine" (llama.cpp's
    reserve-then-replay placement) or "graph" (this graph planned alone); default engine for
    stacks, graph for single layers, as `lace plan`. max_streams bounds the schedule's
    streams; the row's `streams` is how many it used. config: the model's resolved config
    (filled in from `model` when not given).
    """

    model: str
    layer: str = "gdn"
    layers: int | None = None
    mode: str = "decode"
    batch: int = 1
    tokens: int | None = None
    policy: str = "happens_before"
    gpu: str = "h100"
    max_streams: int = DEFAULT_MAX_STREAMS
    flow: str | None = None
    detector: str = "general"
    n_ctx: int = DEFAULT_N_CTX
    n_ubatch: int = DEFAULT_N_UBATCH
    alignment: int = DEFAULT_ALIGNMENT
    launch: str = "graph"
    weight_bytes_per_param: float = 2.0
    config: ModelConfig | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(
                f"a case's model is a preset name or a config file path, got {self.model!r}"
            )
        key = self.model.strip().lower()
        if key in PRESETS:
            put("model", key)
        put("config", self.config if self.config is not None else get_config(self.model))
        _check_name("layer kind", self.layer, LAYER_KINDS)
        _check_name("mode", self.mode, MODES)
        _check_name("policy", self.policy, tuple(POLICIES))
        _check_name("detector", self.detector, DETECTORS)
        _check_name("launch mode", self.launch, LAUNCH_MODES)
        put("gpu", get_gpu(self.gpu).name)
        if self.layers is None:
            put("layers", self.config.n_layer if self.layer == "stack" else 1)  # type: ignore[union-attr]
        if self.tokens is None:
            put("tokens", 1 if self.mode == "decode" else DEFAULT_PREFILL_TOKENS)
        if self.flow is None:
            put("flow", "engine" if self.layer == "stack" else "graph")
        _check_name("flow", self.flow, FLOWS)
        for name in ("layers", "batch", "tokens", "max_streams", "n_ctx", "n_ubatch", "alignment"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"a case's {name} must be a positive integer, got {value!r}")
        w = self.weight_bytes_per_param
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ConfigError(f"weight_bytes_per_param must be a number > 0, got {w!r}")
        put("weight_bytes_per_param", float(w))

    def fields(self) -> dict[str, object]:
        """The case's fields, without its config object: the columns a row starts with."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "config"
        }

    @cached_property
    def id(self) -> str:
        """16 hex digits of SHA-256 over the fields and the model's config: stable anywhere."""
        assert self.config is not None
        identity = {**self.fields(), "config": self.config.to_dict()}
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @cached_property
    def context_id(self) -> str:
        """The same hash over `CONTEXT_FIELDS` only: the cases one graph context serves."""
        assert self.config is not None
        identity = {
            **{name: getattr(self, name) for name in CONTEXT_FIELDS},
            "config": self.config.to_dict(),
        }
        text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """'tiny stack×4 decode B=2 happens_before h100-sxm': a case in a line."""
        layers = f"×{self.layers}" if self.layer == "stack" else ""
        tokens = f" T={self.tokens}" if self.mode == "prefill" else ""
        return (
            f"{self.model} {self.layer}{layers} {self.mode} B={self.batch}{tokens} "
            f"{self.policy} {self.gpu}"
        )


def _check_name(what: str, name: object, known: Sequence[str]) -> None:
    if name not in known:
        raise UnknownNameError(what, name, tuple(known))


def expand_grid(
    models: Sequence[str],
    *,
    layer_kinds: Sequence[str] = ("gdn",),
    layers: Sequence[int | None] = (None,),
    modes: Sequence[str] = ("decode",),
    tokens: Sequence[int | None] = (None,),
    batches: Sequence[int] = (1,),
    policies: Sequence[str] = (ALL,),
    gpus: Sequence[str] = ("h100",),
    max_streams: Sequence[int] = (DEFAULT_MAX_STREAMS,),
    flow: str | None = None,
    detector: str = "general",
    n_ctx: int = DEFAULT_N_CTX,
    n_ubatch: int = DEFAULT_N_UBATCH,
    alignment: int = DEFAULT_ALIGNMENT,
    launch: str = "graph",
    weight_bytes_per_param: float = 2.0,
) -> tuple[SweepCase, ...]:
    """Every case of the grid models × layer kinds × layers × modes × tokens × batches ×
    max_streams × policies × GPUs, in that order (so the cases of one graph are adjacent),
    without repeats.

    Axes that do not apply to a case are not multiplied: `layers` (stack depths; None: all
    of the model's) only for `stack`, `tokens` only for prefill. `policies` may hold "all"
    (every policy, in registry order). An empty axis or an unknown name raises a LaceError
    before any case runs."""
    axes = {
        "models": models,
        "layer_kinds": layer_kinds,
        "layers": layers,
        "modes": modes,
        "tokens": tokens,
        "batches": batches,
        "policies": policies,
        "gpus": gpus,
        "max_streams": max_streams,
    }
    for name, values in axes.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise LaceError(f"{name} must be a list of values, got {values!r}")
        if not list(values):
            raise LaceError(f"the grid's {name} is empty; give at least one")
    configs = {m: get_config(m) for m in dict.fromkeys(models)}
    policy_names = _policies(policies)
    cases: dict[str, SweepCase] = {}
    for model, kind, mode in itertools.product(models, layer_kinds, modes):
        depths = layers if kind == "stack" else (None,)
        counts = tokens if mode == "prefill" else (None,)
        for depth, count, batch, streams, policy, gpu in itertools.product(
            depths, counts, batches, max_streams, policy_names, gpus
        ):
            case = SweepCase(
                model=model,
                layer=kind,
                layers=depth,
                mode=mode,
                batch=batch,
                tokens=count,
                policy=policy,
                gpu=gpu,
                max_streams=streams,
                flow=flow,
                detector=detector,
                n_ctx=n_ctx,
                n_ubatch=n_ubatch,
                alignment=alignment,
                launch=launch,
                weight_bytes_per_param=weight_bytes_per_param,
                config=configs[model],
            )
            cases.setdefault(case.id, case)
    return tuple(cases.values())


def _policies(names: Sequence[str]) -> list[str]:
    """The policies `names` lists, "all" expanded, in the order given, without repeats."""
    out: list[str] = []
    for name in names:
        if name == ALL:
            out += list(POLICIES)
        elif name in POLICIES:
            out.append(name)
        else:
            raise UnknownNameError("policy", name, [*POLICIES, ALL])
    return list(dict.fromkeys(out))


def group_by_context(cases: Iterable[SweepCase]) -> list[tuple[SweepCase, ...]]:
    """The cases split by `context_id`, groups and cases in first-seen order: the unit of work
    of a sweep (one graph context, every policy and GPU asked of it)."""
    groups: dict[str, list[SweepCase]] = {}
    for case in cases:
        groups.setdefault(case.context_id, []).append(case)
    return [tuple(g) for g in groups.values()]


__all__ = [
    "ALL",
    "CONTEXT_FIELDS",
    "SIMULATION_FIELDS",
    "SweepCase",
    "expand_grid",
    "group_by_context",
]
