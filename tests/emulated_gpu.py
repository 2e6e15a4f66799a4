"""The GPU recording stack on the CPU, for tests: the CuPy stand-in (tests/cuda_emu) with the
few calls the race experiment and `lace record` add (asynchronous copies, event times), fake
CUPTI, NumPy arrays over the stand-in's (host) memory for the on-device comparison, and host
draws where the sweep draws weights on the device.

`python tests/emulated_gpu.py DIR` writes the small recording under tests/data/ that
`lace bench --from-data` and the notebook tests read: the real `record()` pipeline on the
emulated device. Its times are NOT measurements (the event times are a counter); the manifest's
device says so.
"""

from __future__ import annotations

import ctypes
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from cuda_emu import emulator, fake_cupy

from concurrency.execute.gpu import kernels as kernel_files

#: The device name of emulated recordings.
EMULATED = "emulated CPU stand-in (times are not measurements)"


class HostArrays:
    """`race.DeviceArrays` over the stand-in's memory, which is host memory: NumPy views."""

    xp = np

    def view(self, address, shape, strides, dtype):  # type: ignore[no-untyped-def]
        itemsize = np.dtype(dtype).itemsize
        span = itemsize + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        buf = (ctypes.c_uint8 * span).from_address(address)
        return np.ndarray(shape, dtype, buffer=buf, strides=strides)

    def to_host(self, array):  # type: ignore[no-untyped-def]
        return np.asarray(array)


def emulator_ready() -> str | None:
    """None when the emulated kernels build here, else why not."""
    if emulator.compiler() is None:
        return "g++ is not installed here"
    try:
        emulator.library("elementwise.cu")
    except (RuntimeError, OSError) as exc:
        return f"the host C++ build of the kernels failed (needs g++ with C++20): {exc}"
    return None


def install(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Put the stand-ins for cupy and cupti in sys.modules (undone by `monkeypatch`)."""
    cp = fake_cupy.module()
    props = cp.cuda.runtime.getDeviceProperties(0)
    cp.cuda.runtime.getDeviceProperties = lambda i: props | {"name": EMULATED.encode()}
    ticks = iter(range(1, 10**9))
    cp.cuda.get_elapsed_time = lambda a, b: 0.001 * (next(ticks) % 50) + 0.01
    monkeypatch.setitem(sys.modules, "cupy", cp)
    cupti_pkg = types.ModuleType("cupti")
    cupti_pkg.cupti = fake_cupy.CUPTI.module()
    monkeypatch.setitem(sys.modules, "cupti", cupti_pkg)
    monkeypatch.setitem(sys.modules, "cupti.cupti", cupti_pkg.cupti)
    from concurrency.execute.gpu import measure

    monkeypatch.setattr(measure, "_HUB", measure._Hub())
    fake_cupy.CUPTI.callbacks = None
    kernel_files.module.cache_clear()
    return cp


def patch_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `record()` needs beyond the stand-in: this machine's 'versions', NumPy arrays for
    the comparison, host draws (the stand-in has no cupy.random)."""
    from concurrency.execute.gpu import bench, race, record
    from concurrency.execute.gpu.check import reference_inputs

    env = {"device": EMULATED, "driver": "-", "cuda": "-", "cupy": "stand-in", "nvmath": "-"}
    monkeypatch.setattr(record, "environment", lambda: env)
    monkeypatch.setattr(race, "DeviceArrays", lambda cp: HostArrays())
    monkeypatch.setattr(
        bench,
        "random_device_inputs",
        lambda run, seed=0: run.upload(reference_inputs(run.lp.graph, seed)),
    )


@contextmanager
def emulated_recording() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        install(mp)
        patch_recording(mp)
        try:
            yield
        finally:
            kernel_files.module.cache_clear()


def fixture_settings():  # type: ignore[no-untyped-def]
    """The small recording of tests/data/gpu-recording."""
    from concurrency.execute.gpu.race import RaceSettings
    from concurrency.execute.gpu.record import RecordSettings

    return RecordSettings(
        models=("tiny",),
        layer_kinds=("gdn", "attn"),
        batches=(1, 2),
        timeline_batches=(1,),
        policies=("sequential", "happens_before"),
        weights="f32",
        matmul="custom",
        rounds=2,
        per_round=1,
        race_models=("tiny",),
        race_layer_kinds=("attn",),
        race_batches=(1,),
        race=RaceSettings(
            replays=2,
            timing_replays=0,
            plans=("happens_before", "sequential", "planted", "interleave (one stream)"),
            widen="never",
        ),
    )


def main(folder: str) -> None:
    import shutil

    from concurrency.execute.gpu.record import record
    from concurrency.execute.gpu.record_text import summary_lines

    out = Path(folder)
    if out.exists():
        shutil.rmtree(out)
    with emulated_recording():
        rec = record(fixture_settings(), out, "python tests/emulated_gpu.py " + folder)
    print("\n".join(summary_lines(rec)))


if __name__ == "__main__":
    main(sys.argv[1])
