"""A measured kernel model: what a calibrated GPU spec knows beyond the datasheet.

The datasheet roofline (`concurrency.timing.simulate`) charges a kernel max(bytes ÷ bandwidth,
FLOPs ÷ peak) at a fixed fraction of the peaks. Measured kernels do not look like that: a
small kernel costs ~1.5–3 µs whatever it moves, a GEMV's cost grows with its activation columns,
a strided copy reaches a fifth of the bandwidth a contiguous one does. `lace calibrate`
(`concurrency.timing.calibrate`) fits, per kernel family (`cost.OP_CLASSES`), one curve:

    time = latency + per_column · columns                                    (fixed part)
         + per_k_outputs · outputs/1e3 + combine(per_mb · MB, per_gflop · GFLOP)  (work part)

where combine is a sum, or a max for families whose memory and arithmetic overlap (the GEMV).
The fixed part is an affine floor; with the work part it is the saturating efficiency curve
the issue asks for: the achieved fraction of a class's bandwidth is MB ÷ (MB + half_size_mb),
half_size_mb = latency ÷ per_mb (`ClassCurve.efficiency`).

Kernels running together: each kernel's work part uses a share of the GPU, its *demand*
u = work ÷ (fixed + work) ∈ [0, 1]. Kernels that together ask for less than the whole GPU run
at their isolated speed; otherwise every running kernel's work part stretches by
max(1, u_max + (Σu − u_max) ÷ η), where η (`concurrency_efficiency`) is how well co-running
kernels share: 1 is proportional sharing, below 1 they get in each other's way. A kernel alone
is never stretched. A share φ (`shared_fixed_fraction`) of the fixed part contends like work
when kernels co-run; the rest (launch latency, tail) never stretches: it is what streams hide.

No curve beats the datasheet: a kernel's work part is at least its roofline time at 100 % of
the spec's peaks (bytes ÷ bandwidth, FLOPs ÷ its unit's peak) less its fixed part, so a curve
fitted where a family is memory-bound (a GEMM at 64 columns) still pays for arithmetic where it
is not (the same GEMM at 512 columns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from concurrency.errors import ConfigError

if TYPE_CHECKING:
    from concurrency.timing.cost import OpCost
    from concurrency.timing.gpus import GpuSpec

#: The curve every family without its own uses (fitted on all kernels together).
DEFAULT_CLASS = "*"
#: The widest projection LACE's GPU executor runs as its own GEMV (concurrency.execute.gpu.
#: launch.GEMV_MAX_COLUMNS, measured on the H200; timing imports nothing of the GPU path).
LACE_GEMV_MAX_COLUMNS = 2


@dataclass(frozen=True)
class ClassCurve:
    """One kernel family's fitted time (µs) as a function of its cost (see the module doc)."""

    op_class: str
    latency_us: float = 0.0
    us_per_column: float = 0.0
    us_per_k_outputs: float = 0.0
    us_per_mb: float = 0.0
    us_per_gflop: float = 0.0
    overlap: bool = False
    kernels: int = 0  # how many measured kernels it was fitted on

    def __post_init__(self) -> None:
        for f in ("latency_us", "us_per_column", "us_per_k_outputs", "us_per_mb", "us_per_gflop"):
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(
                    f"curve {self.op_class!r}: {f} must be a number ≥ 0, got {value!r}"
                )
        if not isinstance(self.overlap, bool):
            raise ConfigError(f"curve {self.op_class!r}: overlap must be true or false")

    def fixed_us(self, cost: OpCost) -> float:
        """The part no co-running kernel stretches: launch latency and per-column overhead."""
        return self.latency_us + self.us_per_column * cost.columns

    def work_us(self, cost: OpCost) -> float:
        """The part that shares the GPU: outputs, bytes and FLOPs."""
        memory = self.us_per_mb * cost.bytes_moved / 1e6
        compute = self.us_per_gflop * cost.flops / 1e9
        moved = max(memory, compute) if self.overlap else memory + compute
        return self.us_per_k_outputs * cost.outputs / 1e3 + moved

    def isolated_us(self, cost: OpCost) -> float:
        return self.fixed_us(cost) + self.work_us(cost)

    @property
    def bandwidth_gbps(self) -> float | None:
        """The bandwidth a large kernel of this family reaches (None: no bytes term)."""
        return 1e3 / self.us_per_mb if self.us_per_mb > 0 else None

    @property
    def tflops(self) -> float | None:
        """The FLOP rate a large kernel of this family reaches (None: no FLOP term)."""
        return 1e3 / self.us_per_gflop if self.us_per_gflop > 0 else None

    @property
    def half_size_mb(self) -> float | None:
        """The size at which the family reaches half its bandwidth (None: no bytes term)."""
        return self.latency_us / self.us_per_mb if self.us_per_mb > 0 else None

    def efficiency(self, megabytes: float, peak_gbps: float) -> float:
        """The achieved fraction of `peak_gbps` for a kernel moving `megabytes` (no other
        term): the saturating curve MB ÷ (MB + half size) × the family's top fraction."""
        top = self.bandwidth_gbps
        if top is None or megabytes <= 0:
            return 0.0
        return top / peak_gbps * megabytes / (megabytes + (self.half_size_mb or 0.0))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ClassCurve:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ConfigError(f"unknown curve keys {unknown}; allowed: {sorted(names)}")
        if "op_class" not in raw:
            raise ConfigError("a curve needs its op_class")
        return cls(**raw)


def roofline_us(cost: OpCost, gpu: GpuSpec) -> float:
    """A kernel's time at 100 % of the datasheet peaks: the bound no curve may beat."""
    tflops = gpu.bf16_tflops if cost.tensor_cores else gpu.fp32_tflops
    return max(cost.bytes_moved / (gpu.mem_bandwidth_gbps * 1e3), cost.flops / (tflops * 1e6))


@dataclass(frozen=True)
class KernelModel:
    """Fitted curves per kernel family, and how co-running kernels share the GPU."""

    curves: tuple[ClassCurve, ...]
    concurrency_efficiency: float = 1.0
    shared_fixed_fraction: float = 0.0
    #: The widest projection (activation columns) the engine runs as a GEMV; wider ones take
    #: the GEMM curve. LACE's executor: LACE_GEMV_MAX_COLUMNS (the GPU launch plan's
    #: GEMV_MAX_COLUMNS; a test keeps them equal); ggml-cuda on sm_90 with f16 weights: 1
    #: (mmvf), its tensor-core mmf and cuBLAS above.
    gemv_max_columns: int = LACE_GEMV_MAX_COLUMNS

    def __post_init__(self) -> None:
        object.__setattr__(self, "curves", tuple(self.curves))
        names = [c.op_class for c in self.curves]
        if DEFAULT_CLASS not in names:
            raise ConfigError(
                f"a kernel model needs a default curve (op_class {DEFAULT_CLASS!r}) for the "
                "families it has no curve of"
            )
        if len(set(names)) != len(names):
            raise ConfigError(f"a kernel model has one curve per family; got {names}")
        eta = self.concurrency_efficiency
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta > 0:
            raise ConfigError(f"concurrency_efficiency must be > 0, got {eta!r}")
        phi = self.shared_fixed_fraction
        if isinstance(phi, bool) or not isinstance(phi, (int, float)) or not 0 <= phi <= 1:
            raise ConfigError(f"shared_fixed_fraction must be in [0, 1], got {phi!r}")
        cols = self.gemv_max_columns
        if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
            raise ConfigError(f"gemv_max_columns must be a whole number ≥ 1, got {cols!r}")

    @property
    def by_class(self) -> Mapping[str, ClassCurve]:
        return {c.op_class: c for c in self.curves}

    def curve(self, op_class: str) -> ClassCurve:
        """The family's curve, or the default one."""
        by = self.by_class
        return by.get(op_class, by[DEFAULT_CLASS])

    def curve_for(self, cost: OpCost) -> ClassCurve:
        """The curve a kernel runs on: its family's, except a GEMV wider than
        gemv_max_columns, which runs on the GEMM curve."""
        if cost.op_class == "gemv" and cost.columns > self.gemv_max_columns:
            return self.curve("gemm")
        return self.curve(cost.op_class)

    def isolated_us(self, cost: OpCost, gpu: GpuSpec) -> float:
        return self.shared_durations([cost], gpu)[0] if cost.launches else 0.0

    def shared_durations(self, costs: Sequence[OpCost], gpu: GpuSpec) -> list[float]:
        """Each kernel's time if `costs` ran together for their whole life (µs) on `gpu`
        (whose datasheet peaks bound every curve from below)."""
        phi = self.shared_fixed_fraction if len(costs) > 1 else 0.0
        parts = []
        for c in costs:
            curve = self.curve_for(c)
            fixed = curve.fixed_us(c)
            work = max(curve.work_us(c), roofline_us(c, gpu) - fixed)
            parts.append(((1 - phi) * fixed, work + phi * fixed))
        demand = [w / (f + w) if f + w > 0 else 0.0 for f, w in parts]
        stretch = 1.0
        if len(parts) > 1:
            top = max(demand)
            stretch = max(1.0, top + (sum(demand) - top) / self.concurrency_efficiency)
        return [f + w * stretch for f, w in parts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "curves": [asdict(c) for c in self.curves],
            "concurrency_efficiency": self.concurrency_efficiency,
            "shared_fixed_fraction": self.shared_fixed_fraction,
            "gemv_max_columns": self.gemv_max_columns,
        }

    @classmethod
    def from_dict(cls, raw: object) -> KernelModel:
        if not isinstance(raw, Mapping):
            raise ConfigError("kernel_model must be a JSON object with 'curves'")
        known = {"curves", "concurrency_efficiency", "shared_fixed_fraction", "gemv_max_columns"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown kernel_model keys {unknown}")
        curves = raw.get("curves")
        if not isinstance(curves, list) or not all(isinstance(c, Mapping) for c in curves):
            raise ConfigError("kernel_model.curves must be a list of JSON objects")
        return cls(
            tuple(ClassCurve.from_dict(c) for c in curves),
            raw.get("concurrency_efficiency", 1.0),
            raw.get("shared_fixed_fraction", 0.0),
            raw.get("gemv_max_columns", 8),
        )
