"""GPU specifications for the simulator: SMs, memory bandwidth, peak rates and launch gaps.

Peaks are the vendors' datasheet figures (dense, no sparsity); each entry's `source` names
the document. Kernels never reach a datasheet peak, so a spec also carries the fraction a
good kernel does reach (`bandwidth_efficiency`, `compute_efficiency`), anchored on the lent
H200 (gdn-reference §6.3: device copies at 4.23 of 4.8 TB/s, bf16 GEMM at ~790 of 989
TFLOP/s) and on an H100 (3.0 of 3.35 TB/s, 798 TFLOP/s). The other GPUs reuse those fractions
until someone measures them. A spec built from measured numbers should set both to 1.

Launch gaps: ~2.5 µs between dependent kernels when a CUDA graph is replayed, ~10 µs per
kernel when Python launches eagerly (the DEVELOPERS guidance).

A calibrated spec (`lace calibrate`) carries a `kernel_model` (concurrency.timing.kernel_model):
per kernel family a curve fitted on measured kernels, which the simulator uses instead of the
roofline, and the launch gap measured in CUDA-graph replay. `load_gpu_spec` reads a spec file:
a plain spec object, or the calibrated document `lace calibrate` writes (its `spec` plus the
fit's provenance).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from concurrency.errors import ConfigError, UnknownNameError
from concurrency.timing.kernel_model import KernelModel

LAUNCH_GAP_GRAPH_US = 2.5
LAUNCH_GAP_EAGER_US = 10.0


@dataclass(frozen=True)
class GpuSpec:
    """One GPU as the simulator sees it (rates dense; bandwidth in GB/s = 1e9 bytes/s)."""

    name: str
    sm_count: int
    mem_bandwidth_gbps: float
    fp32_tflops: float
    tf32_tflops: float
    bf16_tflops: float
    l2_mib: float
    launch_gap_graph_us: float = LAUNCH_GAP_GRAPH_US
    launch_gap_eager_us: float = LAUNCH_GAP_EAGER_US
    source: str = ""
    bandwidth_efficiency: float = 0.88
    compute_efficiency: float = 0.80
    kernel_model: KernelModel | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sm_count, int) or self.sm_count <= 0:
            raise ConfigError(f"GPU {self.name!r}: sm_count must be a positive integer")
        for field in ("mem_bandwidth_gbps", "fp32_tflops", "tf32_tflops", "bf16_tflops"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"GPU {self.name!r}: {field} must be > 0, got {value!r}")
        for field in ("launch_gap_graph_us", "launch_gap_eager_us", "l2_mib"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"GPU {self.name!r}: {field} must be ≥ 0, got {value!r}")
        for field in ("bandwidth_efficiency", "compute_efficiency"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ConfigError(f"GPU {self.name!r}: {field} must be in (0, 1], got {value!r}")
        if self.kernel_model is not None and not isinstance(self.kernel_model, KernelModel):
            raise ConfigError(f"GPU {self.name!r}: kernel_model must be a KernelModel or None")

    @property
    def calibrated(self) -> bool:
        """Whether kernel times come from measured curves rather than the roofline."""
        return self.kernel_model is not None

    @property
    def bytes_per_us(self) -> float:
        """Bandwidth a good kernel reaches, in bytes per microsecond."""
        return self.mem_bandwidth_gbps * 1e3 * self.bandwidth_efficiency

    def flops_per_us(self, unit: str) -> float:
        """Reachable rate of one unit ("bf16" tensor cores or "fp32" CUDA cores) in FLOP/µs."""
        tflops = self.bf16_tflops if unit == "bf16" else self.fp32_tflops
        return tflops * 1e6 * self.compute_efficiency

    def to_dict(self) -> dict[str, object]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["kernel_model"] = None if self.kernel_model is None else self.kernel_model.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> GpuSpec:
        """A spec from a mapping (a JSON file); unknown or missing keys are one-line errors."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"unknown GPU spec keys {unknown}; allowed: {sorted(fields)}")
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise ConfigError(f"GPU spec is missing {missing}; give every one of them")
        values = dict(data)
        if values.get("kernel_model") is not None:
            values["kernel_model"] = KernelModel.from_dict(values["kernel_model"])
        try:
            return cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(f"GPU spec has a bad value ({exc})") from None


#: The schema of the calibrated spec document `lace calibrate` writes.
CALIBRATED_SCHEMA = "lace-gpu-spec/1"


def spec_from_document(doc: Mapping[str, object], where: str = "GPU spec") -> GpuSpec:
    """A spec from a JSON object: either the spec's own fields, or a calibrated document
    ({"schema": "lace-gpu-spec/1", "spec": {...}, "fit": {...}})."""
    if "schema" in doc:
        if doc["schema"] != CALIBRATED_SCHEMA:
            raise ConfigError(
                f"{where}: schema {doc['schema']!r} is not {CALIBRATED_SCHEMA!r}; write it with "
                "`lace calibrate`"
            )
        spec = doc.get("spec")
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where}: a calibrated document needs a 'spec' object")
        return GpuSpec.from_dict(spec)
    return GpuSpec.from_dict(doc)


_H100 = GpuSpec(
    name="h100-sxm",
    sm_count=132,
    mem_bandwidth_gbps=3350,
    fp32_tflops=67,
    tf32_tflops=494.7,
    bf16_tflops=989.4,
    l2_mib=50,
    source="NVIDIA H100 Tensor Core GPU datasheet (SXM5 80GB; TF32/BF16 dense = half the "
    "sparse figures); 132 SMs from the NVIDIA H100 (Hopper) architecture whitepaper",
)

GPUS: Mapping[str, GpuSpec] = MappingProxyType(
    {
        "h100-sxm": _H100,
        "h200": GpuSpec(
            name="h200",
            sm_count=132,
            mem_bandwidth_gbps=4800,
            fp32_tflops=67,
            tf32_tflops=494.7,
            bf16_tflops=989.4,
            l2_mib=50,
            source="NVIDIA H200 Tensor Core GPU datasheet (SXM 141GB; dense = half the sparse "
            "figures); 132 SMs measured on the lent H200 (gdn-reference §6.3)",
        ),
        "rtx5090": GpuSpec(
            name="rtx5090",
            sm_count=170,
            mem_bandwidth_gbps=1792,
            fp32_tflops=104.8,
            tf32_tflops=104.8,
            bf16_tflops=209.5,
            l2_mib=96,
            source="NVIDIA RTX Blackwell GPU architecture whitepaper (GeForce RTX 5090: 170 SMs,"
            " 1792 GB/s GDDR7, BF16 tensor dense with FP32 accumulate 209.5 TFLOP/s)",
        ),
        "rtx4090": GpuSpec(
            name="rtx4090",
            sm_count=128,
            mem_bandwidth_gbps=1008,
            fp32_tflops=82.6,
            tf32_tflops=82.6,
            bf16_tflops=165.2,
            l2_mib=72,
            source="NVIDIA Ada Lovelace GPU architecture whitepaper (GeForce RTX 4090: 128 SMs,"
            " 1008 GB/s GDDR6X, BF16 tensor dense with FP32 accumulate 165.2 TFLOP/s)",
        ),
        "a100": GpuSpec(
            name="a100",
            sm_count=108,
            mem_bandwidth_gbps=2039,
            fp32_tflops=19.5,
            tf32_tflops=156,
            bf16_tflops=312,
            l2_mib=40,
            source="NVIDIA A100 Tensor Core GPU datasheet (SXM 80GB, 2039 GB/s HBM2e); 108 SMs "
            "and 40 MB L2 from the NVIDIA A100 (Ampere) architecture whitepaper",
        ),
        "l40s": GpuSpec(
            name="l40s",
            sm_count=142,
            mem_bandwidth_gbps=864,
            fp32_tflops=91.6,
            tf32_tflops=183,
            bf16_tflops=362.05,
            l2_mib=96,
            source="NVIDIA L40S datasheet (864 GB/s GDDR6, dense TF32 183 / BF16 362.05 TFLOP/s)"
            "; 142 SMs (18,176 CUDA cores / 128) from the Ada architecture whitepaper",
        ),
    }
)

#: Short names users type for a table entry.
ALIASES: Mapping[str, str] = MappingProxyType({"h100": "h100-sxm", "5090": "rtx5090"})


def get_gpu(gpu: str | GpuSpec) -> GpuSpec:
    """A table entry by name or alias (case-insensitive), or a user's own GpuSpec unchanged."""
    if isinstance(gpu, GpuSpec):
        return gpu
    key = str(gpu).lower()
    key = ALIASES.get(key, key)
    try:
        return GPUS[key]
    except KeyError:
        raise UnknownNameError("GPU", gpu, [*GPUS, *ALIASES]) from None


def load_gpu_spec(path: str | Path) -> GpuSpec:
    """A spec from a JSON file (a plain spec object or a calibrated document); one ConfigError
    naming the file and the problem otherwise."""
    import json

    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"GPU spec file {path} not found; check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"GPU spec file {path} cannot be read as JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"GPU spec file {path} must hold a JSON object")
    try:
        return spec_from_document(doc, str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
