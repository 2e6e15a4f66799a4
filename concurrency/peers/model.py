"""The end-to-end peer model as a GGUF: Qwen3.5-27B widths, 4 layers (3 GDN + 1 attention),
vocabulary 256, random f16 weight matrices, written with LACE's GGUF writer
(`concurrency.oracle.gguf_model`). A small vocabulary keeps the output head out of a timing
whose subject is the layers."""

from __future__ import annotations

import math
from pathlib import Path

from concurrency.graph.config import ModelConfig
from concurrency.oracle.gguf_model import gguf_tensor_shapes, write_gguf
from concurrency.peers.cases import peer_model_config


def _is_matrix(name: str, ne: tuple[int, ...]) -> bool:
    return len(ne) >= 2 and not name.endswith("ssm_conv1d.weight")


def weight_bytes(cfg: ModelConfig, matrix_type: str = "f16") -> int:
    """Bytes of every tensor in the GGUF `write_peer_model` writes for `cfg` (data only)."""
    matrix_bytes = {"f16": 2, "f32": 4}[matrix_type]
    return sum(
        math.prod(ne) * (matrix_bytes if _is_matrix(name, ne) else 4)
        for name, ne in gguf_tensor_shapes(cfg).items()
    )


def write_peer_model(
    path: Path, cfg: ModelConfig | None = None, seed: int = 0, matrix_type: str = "f16"
) -> int:
    """Write the peer model (`peer_model_config()` unless `cfg` is given) to `path`; return
    its tensor bytes."""
    cfg = cfg or peer_model_config()
    write_gguf(cfg, Path(path), seed, matrix_type=matrix_type)
    return weight_bytes(cfg, matrix_type)


def main(argv: list[str] | None = None) -> int:
    """`python -m concurrency.peers.model PATH`: write the peer model, print its size."""
    import argparse
    import time

    ap = argparse.ArgumentParser(prog="python -m concurrency.peers.model")
    ap.add_argument("path", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    nbytes = write_peer_model(args.path, seed=args.seed)
    print(f"{args.path}: {nbytes / 2**30:.2f} GiB of tensors in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
