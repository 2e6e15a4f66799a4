"""Recorded engine dumps the comparison tests read, so they run on any clone without
llama-cpp-python: every node of a real prompt step and decode step (`concurrency.oracle.engine`)
for four configs (dense, tiny dense, MoE, Qwen3-Next; scaled down) and B = 1…8 sequences of an
odd number of prompt tokens (2B + 1), at n_ctx 512 and n_ubatch 512.

Re-record them (llama-cpp-python needed; the files are reproducible byte for byte):

    PYTHONPATH=. python -m tests.engine_data
"""

from __future__ import annotations

from pathlib import Path

from concurrency.graph.config import PRESETS, ModelConfig, scaled_down
from concurrency.oracle.engine import EngineRun, load_run

DATA = Path(__file__).resolve().parent / "data"
ENGINE_DATA = DATA / "engine"
LLAMA_DUMP = DATA / "llama-graph" / "qwen35-tiny-b1.json"

ENGINE_CONFIGS: dict[str, ModelConfig] = {
    "tiny": PRESETS["tiny"],
    "qwen35-dense": scaled_down(PRESETS["qwen3.5-27b"]),
    "qwen35moe": scaled_down(PRESETS["qwen3.5-35b-a3b"]),
    "qwen3next": scaled_down(PRESETS["qwen3-next-80b-a3b"]),
}
BATCHES = tuple(range(1, 9))


def prompt_tokens(batch: int) -> int:
    """The odd prompt length recorded for `batch` sequences."""
    return 2 * batch + 1


def recorded_path(name: str, batch: int) -> Path:
    return ENGINE_DATA / f"{name}-b{batch}-t{prompt_tokens(batch)}.json.gz"


def recorded_run(name: str, batch: int) -> EngineRun:
    """The recorded probe of config `name` at `batch` sequences."""
    return load_run(recorded_path(name, batch))


def record(cache_dir: Path | None = None) -> list[Path]:
    """Probe every recorded case afresh and write the files (needs llama-cpp-python)."""
    from concurrency.oracle.engine import probe, save_run

    out = []
    for name, cfg in ENGINE_CONFIGS.items():
        for b in BATCHES:
            run = probe(cfg, b, prompt_tokens(b), cache_dir=cache_dir)
            out.append(save_run(run, recorded_path(name, b)))
    return out


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lace-record-") as tmp:
        paths = record(Path(tmp))
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} engine dumps to {ENGINE_DATA} ({total / 1024:.0f} KiB)")
