"""The engine probe (issue 9): what the real llama.cpp computes, node by node.

Two halves:

* `write_gguf` writes a random-weight GGUF for a `ModelConfig` (qwen35, qwen35moe or qwen3next)
  with every metadata key and tensor the loader vendored by llama-cpp-python 0.3.36 requires,
  and a `no_vocab` vocabulary of `n_vocab` dummy tokens, so no tokenizer file is needed.
* `probe` loads that file on the CPU through llama-cpp-python's low-level API, registers the
  scheduler's eval callback (`cb_eval`) and runs two real steps: a prompt step (`batch` sequences
  of `prompt_tokens` tokens each, in one `llama_decode`) and a decode step (one more token per
  sequence, in one `llama_decode`). Every graph node is recorded in compute order with its op,
  shape, strides, view source, sources and byte offset in its backend buffer.

Why the callback sees every node exactly once: when the callback answers "yes" to every `ask`,
`ggml_backend_sched_compute_splits` computes the graph one node at a time and reports each node
once after computing it; the CPU backend makes a single split, and neither probe nor llama.cpp
runs a warm-up. Observation changes how the graph is computed (node by node), not how it is
allocated: offsets are those of the compute buffer reserved at context creation. The probe refuses
a step in which a tensor is reported twice, and records the node counts llama.cpp logs for the
graphs it reserved (`EngineRun.reserve_nodes`, from `ggml_graph_n_nodes`) so they can be compared.

Results are cached as JSON (`~/.cache/lace/engine` by default), keyed by the config, the step
sizes and the installed llama-cpp-python version; a cache hit loads no library at all.
"""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from concurrency.errors import LaceError, MissingToolError
from concurrency.graph.config import ModelConfig
from concurrency.oracle.ggml_lib import INSTALL_HINT, Ggml, GgmlTensor
from concurrency.oracle.gguf_model import write_gguf

#: Written into every JSON result; a file without it is refused. It is part of the cache key, so
#: a new result format never reads an old cache file.
SCHEMA = "lace.engine/1"
DEFAULT_CACHE = Path.home() / ".cache" / "lace" / "engine"
#: ggml_backend_buffer_usage: 0 any (llama.cpp's caches), 1 weights, 2 compute (ggml-alloc's plan).
BUFFER_USAGE_COMPUTE = 2

# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineNode:
    """One graph node as the engine computed it.

    `offset` is the byte offset of the node's data in its backend buffer (data − buffer base;
    −1 when the node has no data pointer). `buffer` is a small id numbered by first appearance
    in the run: equal ids mean the same ggml buffer object, so compare them within a run only.
    """

    name: str
    op: str
    type: int
    ne: tuple[int, ...]
    nb: tuple[int, ...]
    view_src: str | None
    view_offs: int
    buffer: int
    buffer_usage: int
    offset: int
    srcs: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "op": self.op,
            "type": self.type,
            "ne": list(self.ne),
            "nb": list(self.nb),
            "view_src": self.view_src,
            "view_offs": self.view_offs,
            "buffer": self.buffer,
            "buffer_usage": self.buffer_usage,
            "offset": self.offset,
            "srcs": list(self.srcs),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EngineNode:
        return cls(
            name=str(d["name"]),
            op=str(d["op"]),
            type=int(d["type"]),
            ne=tuple(int(x) for x in d["ne"]),
            nb=tuple(int(x) for x in d["nb"]),
            view_src=None if d["view_src"] is None else str(d["view_src"]),
            view_offs=int(d["view_offs"]),
            buffer=int(d["buffer"]),
            buffer_usage=int(d["buffer_usage"]),
            offset=int(d["offset"]),
            srcs=tuple(str(s) for s in d["srcs"]),
        )


@dataclass(frozen=True)
class EngineRun:
    """Both steps of one probe, with what produced them.

    `reserve_nodes` is (prompt-shaped, decode-shaped) node counts of the graphs llama.cpp
    reserved at context creation, read from its log: an independent count of graph nodes that
    the observed phases are checked against.
    """

    config: dict[str, Any]
    batch: int
    prompt_tokens: int
    n_ubatch: int
    n_ctx: int
    llama_version: str
    prompt: tuple[EngineNode, ...]
    decode: tuple[EngineNode, ...]
    reserve_nodes: tuple[int, int] = (-1, -1)

    def phase(self, name: str) -> tuple[EngineNode, ...]:
        if name not in ("prompt", "decode"):
            raise LaceError(f"unknown engine phase {name!r}; choose prompt or decode")
        return self.prompt if name == "prompt" else self.decode

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": SCHEMA,
                "config": self.config,
                "batch": self.batch,
                "prompt_tokens": self.prompt_tokens,
                "n_ubatch": self.n_ubatch,
                "n_ctx": self.n_ctx,
                "llama_version": self.llama_version,
                "reserve_nodes": list(self.reserve_nodes),
                "prompt": [n.to_dict() for n in self.prompt],
                "decode": [n.to_dict() for n in self.decode],
            }
        )

    @classmethod
    def from_json(cls, text: str, source: str | Path = "<engine JSON>") -> EngineRun:
        """Parse `to_json`'s output; anything else raises a LaceError naming `source`."""
        fix = f"delete {source} and probe again"
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LaceError(f"engine result {source} is not valid JSON ({exc}); {fix}") from None
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            found = d.get("schema") if isinstance(d, dict) else type(d).__name__
            raise LaceError(
                f"engine result {source} is not a {SCHEMA} file (found {found!r}); {fix}"
            )
        try:
            return cls(
                config=dict(d["config"]),
                batch=int(d["batch"]),
                prompt_tokens=int(d["prompt_tokens"]),
                n_ubatch=int(d["n_ubatch"]),
                n_ctx=int(d["n_ctx"]),
                llama_version=str(d["llama_version"]),
                prompt=tuple(EngineNode.from_dict(n) for n in d["prompt"]),
                decode=tuple(EngineNode.from_dict(n) for n in d["decode"]),
                reserve_nodes=tuple(int(x) for x in d["reserve_nodes"]),  # type: ignore[arg-type]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LaceError(
                f"engine result {source} is incomplete or corrupt ({exc!r}); {fix}"
            ) from None


# ---------------------------------------------------------------------------------------------


def llama_version() -> str:
    """The installed llama-cpp-python's version, read from its metadata (no library load)."""
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        raise MissingToolError(f"the engine probe needs llama-cpp-python; {INSTALL_HINT}") from None


def _load_llama() -> ModuleType:
    """llama-cpp-python's low-level ctypes module (loads libllama); names the fix if absent."""
    try:
        from llama_cpp import llama_cpp
    except (ImportError, OSError) as exc:
        raise MissingToolError(
            f"the engine probe cannot load llama-cpp-python ({exc}); {INSTALL_HINT}"
        ) from None
    return llama_cpp


def cache_key(
    cfg: ModelConfig, batch: int, prompt_tokens: int, n_ubatch: int, n_ctx: int, version: str
) -> str:
    """A hash of everything that decides a probe's result (and the result format)."""
    blob = json.dumps(
        {
            "schema": SCHEMA,
            "config": cfg.to_dict(),
            "batch": batch,
            "prompt_tokens": prompt_tokens,
            "n_ubatch": n_ubatch,
            "n_ctx": n_ctx,
            "llama_version": version,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_path(
    cfg: ModelConfig,
    batch: int,
    prompt_tokens: int,
    *,
    n_ubatch: int = 512,
    n_ctx: int = 512,
    cache_dir: Path | None = None,
) -> Path:
    """Where `probe` keeps (or finds) the result for these arguments."""
    key = cache_key(cfg, batch, prompt_tokens, n_ubatch, n_ctx, llama_version())
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", cfg.name)
    return Path(cache_dir or DEFAULT_CACHE) / f"{safe}-b{batch}-t{prompt_tokens}-{key}.json"


def probe(
    cfg: ModelConfig,
    batch: int,
    prompt_tokens: int,
    *,
    n_ubatch: int = 512,
    n_ctx: int = 512,
    cache_dir: Path | None = None,
) -> EngineRun:
    """Every node of a real prompt step and decode step of `cfg`, cached (see the module doc).

    The prompt step is one `llama_decode` of `batch` sequences (ids 0..batch−1) of
    `prompt_tokens` tokens each, with logits for each sequence's last token; the decode step is
    one `llama_decode` of one more token per sequence.
    """
    _check_sizes(cfg, batch, prompt_tokens, n_ubatch, n_ctx)
    path = cache_path(
        cfg, batch, prompt_tokens, n_ubatch=n_ubatch, n_ctx=n_ctx, cache_dir=cache_dir
    )
    if path.exists():
        return load_run(path)
    llama = _load_llama()
    with tempfile.TemporaryDirectory(prefix="lace-engine-") as tmp:
        model_path = Path(tmp) / f"{cfg.arch}.gguf"
        write_gguf(cfg, model_path)
        run = _run_engine(llama, cfg, model_path, batch, prompt_tokens, n_ubatch, n_ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(f".{os.getpid()}.part")
    part.write_text(run.to_json())
    part.replace(path)
    return run


def load_run(path: Path | str) -> EngineRun:
    """An `EngineRun` saved by `probe` or `save_run` (gzip-compressed when the name ends in
    .gz); a bad file raises a LaceError naming it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode()
    except FileNotFoundError:
        raise LaceError(f"engine result {path} does not exist; run the probe first") from None
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise LaceError(
            f"engine result {path} is not readable ({exc}); delete it and probe again"
        ) from None
    return EngineRun.from_json(text, source=path)


def save_run(run: EngineRun, path: Path | str) -> Path:
    """Write `run` as JSON (gzip-compressed, reproducibly, when the name ends in .gz)."""
    path = Path(path)
    data = run.to_json().encode()
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    part.write_bytes(data)
    part.replace(path)
    return path


def _check_sizes(
    cfg: ModelConfig, batch: int, prompt_tokens: int, n_ubatch: int, n_ctx: int
) -> None:
    for name, v in (
        ("batch", batch),
        ("prompt_tokens", prompt_tokens),
        ("n_ubatch", n_ubatch),
        ("n_ctx", n_ctx),
    ):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise LaceError(f"{name} must be a positive integer, got {v!r}")
    if batch * prompt_tokens > n_ubatch:
        raise LaceError(
            f"the prompt step ({batch}×{prompt_tokens} tokens) must fit one ubatch; "
            f"raise n_ubatch to at least {batch * prompt_tokens}"
        )
    if batch * (prompt_tokens + 1) > n_ctx:
        raise LaceError(
            f"{batch} sequences of {prompt_tokens + 1} tokens do not fit n_ctx={n_ctx}; raise n_ctx"
        )
    if batch > 256:
        raise LaceError(f"llama.cpp runs at most 256 sequences, got batch={batch}; lower it")


# The log callback must outlive every llama call that may log, so it lives at module level.
_LOG_LINES: list[str] = []
_LOG_CALLBACK: Any = None


def _quiet_log(llama: ModuleType) -> None:
    """Route llama.cpp's log into `_LOG_LINES` (kept short) instead of stderr."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:

        def on_log(level: int, text: bytes | None, user_data: int | None) -> None:
            if text:
                _LOG_LINES.append(text.decode(errors="replace"))
                del _LOG_LINES[:-400]

        _LOG_CALLBACK = llama.llama_log_callback(on_log)
    llama.llama_log_set(_LOG_CALLBACK, None)


def _reserve_nodes(lines: list[str]) -> tuple[int, int]:
    """(pp, tg) node counts from the last `graph...: nodes = N` or `N / M` line of the log."""
    for line in reversed(lines):
        m = re.search(r"graph.*?: nodes = (\d+)(?: / (\d+))?", line)
        if m:
            pp = int(m.group(1))
            return pp, int(m.group(2) or pp)
    return -1, -1


class _Recorder:
    """The `cb_eval` callback: answers yes to every ask, so the scheduler computes one node at
    a time, and records each node once it is computed."""

    def __init__(
        self,
        op_name: Callable[[int], bytes],
        usage: Callable[[int], int],
        base: Callable[[int], int],
    ) -> None:
        self.op_name, self.usage, self.base = op_name, usage, base
        self.buffers: dict[int, int] = {}
        self.start()

    def start(self) -> None:
        """Begin a step."""
        self.nodes: list[EngineNode] = []
        self.seen: set[int] = set()
        self.error: BaseException | None = None

    def finish(self) -> tuple[EngineNode, ...]:
        """The step's nodes; refuses a step in which a tensor was reported twice."""
        if len(self.seen) != len(self.nodes):
            raise LaceError(
                f"the eval callback reported {len(self.nodes)} nodes but only {len(self.seen)} "
                "distinct tensors; this llama.cpp computes graphs differently from 0.3.36: "
                + INSTALL_HINT
            )
        return tuple(self.nodes)

    def __call__(self, t: int, ask: bool, user_data: int | None) -> bool:
        if ask:
            return True
        try:
            self.nodes.append(self._node(t))
            self.seen.add(t)
        except BaseException as exc:  # an exception cannot cross the C callback: keep it
            self.error = exc
            return False
        return True

    def _node(self, t: int) -> EngineNode:
        g = GgmlTensor.from_address(t)
        view = GgmlTensor.from_address(g.view_src).name.decode() if g.view_src else None
        srcs = tuple(GgmlTensor.from_address(s).name.decode() for s in g.src if s)
        buf = g.buffer or 0
        return EngineNode(
            name=g.name.decode(errors="replace"),
            op=self.op_name(g.op).decode(),
            type=g.type,
            ne=tuple(g.ne),
            nb=tuple(g.nb),
            view_src=view,
            view_offs=g.view_offs,
            buffer=self.buffers.setdefault(buf, len(self.buffers)),
            buffer_usage=self.usage(buf) if buf else -1,
            offset=g.data - self.base(buf) if buf and g.data else -1,
            srcs=srcs,
        )


def _ggml_entry_points() -> tuple[Callable[..., Any], ...]:
    """ggml_op_name, ggml_backend_buffer_get_usage and ggml_backend_buffer_get_base from the
    libggml-base that libllama uses (`Ggml.load` opens the same file and checks its layout)."""
    g = Ggml.load()
    usage = g.base.ggml_backend_buffer_get_usage
    usage.argtypes, usage.restype = [ctypes.c_void_p], ctypes.c_int
    get_base = g.base.ggml_backend_buffer_get_base
    return g.base.ggml_op_name, usage, lambda b: get_base(b) or 0


def _fill_batch(b: Any, rows: list[tuple[int, int, int, bool]]) -> None:
    """Set a llama_batch to (token, pos, seq_id, wants_logits) rows."""
    b.n_tokens = len(rows)
    for i, (tok, pos, seq, out) in enumerate(rows):
        b.token[i] = tok
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = 1 if out else 0


def _steps(cfg: ModelConfig, batch: int, prompt_tokens: int) -> list[list[tuple[int, ...]]]:
    """The two batches: all prompts (sequence-major, equal lengths, logits for each sequence's
    last token), then one more token per sequence. Token ids are fixed pseudo-random."""
    ids = np.random.default_rng(1).integers(0, cfg.n_vocab, size=(batch, prompt_tokens + 1))
    prompt = [
        (int(ids[s, p]), p, s, p == prompt_tokens - 1)
        for s in range(batch)
        for p in range(prompt_tokens)
    ]
    decode = [(int(ids[s, prompt_tokens]), prompt_tokens, s, True) for s in range(batch)]
    return [prompt, decode]


def _context_params(llama: ModuleType, batch: int, tokens: int, n_ubatch: int, n_ctx: int) -> Any:
    """CPU context parameters as the reference dump used: flash attention auto, n_outputs_max
    left at n_batch, one recurrent state per sequence."""
    cp = llama.llama_context_default_params()
    cp.n_ctx = n_ctx
    cp.n_batch = max(n_ubatch, tokens)
    cp.n_ubatch = n_ubatch
    cp.n_seq_max = batch
    cp.n_threads = cp.n_threads_batch = max(1, min(4, os.cpu_count() or 1))
    cp.flash_attn_type = llama.LLAMA_FLASH_ATTN_TYPE_AUTO
    return cp


def _run_engine(
    llama: ModuleType,
    cfg: ModelConfig,
    model_path: Path,
    batch: int,
    prompt_tokens: int,
    n_ubatch: int,
    n_ctx: int,
) -> EngineRun:
    recorder = _Recorder(*_ggml_entry_points())
    _quiet_log(llama)
    _LOG_LINES.clear()
    llama.llama_backend_init()
    mparams = llama.llama_model_default_params()
    mparams.use_mmap = False
    model = llama.llama_model_load_from_file(str(model_path).encode(), mparams)
    if not model:
        raise LaceError(
            f"llama.cpp could not load the {cfg.arch} GGUF of {cfg.name!r} ({_log_tail()}); "
            "fix the config so that the loader accepts it"
        )
    callback = llama.ggml_backend_sched_eval_callback(recorder)  # referenced until freed
    cparams = _context_params(llama, batch, batch * prompt_tokens, n_ubatch, n_ctx)
    cparams.cb_eval = callback
    ctx = b = None
    phases: list[tuple[EngineNode, ...]] = []
    try:
        ctx = llama.llama_init_from_model(model, cparams)
        if not ctx:
            raise LaceError(f"llama.cpp could not create a context ({_log_tail()}); lower n_ctx")
        reserve = _reserve_nodes(_LOG_LINES)
        b = llama.llama_batch_init(batch * prompt_tokens, 0, 1)
        for rows in _steps(cfg, batch, prompt_tokens):
            recorder.start()
            _fill_batch(b, rows)
            rc = llama.llama_decode(ctx, b)
            if recorder.error is not None:
                raise recorder.error
            if rc != 0:
                raise LaceError(f"llama_decode returned {rc} ({_log_tail()}); lower batch")
            phases.append(recorder.finish())
    finally:
        if b is not None:
            llama.llama_batch_free(b)
        if ctx:
            llama.llama_free(ctx)
        llama.llama_model_free(model)
    return EngineRun(
        config=cfg.to_dict(),
        batch=batch,
        prompt_tokens=prompt_tokens,
        n_ubatch=n_ubatch,
        n_ctx=n_ctx,
        llama_version=llama_version(),
        prompt=phases[0],
        decode=phases[1],
        reserve_nodes=reserve,
    )


def _log_tail() -> str:
    lines = [ln.strip() for ln in _LOG_LINES if ln.strip()]
    return " | ".join(lines[-3:]) or "no log output"
