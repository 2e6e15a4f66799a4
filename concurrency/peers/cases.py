"""What the peers measure: Qwen3.5-27B's GDN dimensions, the batch and prompt grid, and the
HBM floors each case is held against (the bytes the step cannot avoid over the H200's measured
copy rate)."""

from __future__ import annotations

from dataclasses import dataclass

from concurrency.errors import LaceError
from concurrency.graph.config import ModelConfig, get_config

#: H200 device-to-device copy rate measured on the lent machine (gdn-reference §6.3), bytes/s;
#: the same figure as concurrency.execute.gpu.bench.H200_COPY_BYTES_PER_S.
H200_COPY_BYTES_PER_S = 4.23e12

#: Decode batches of the core kernels and layers.
DECODE_BATCHES = (1, 4, 16, 64)
#: Prefill cases of the core kernels: (sequences, tokens each).
PREFILL_CASES = ((1, 512), (4, 512), (1, 2048))
#: llama-batched-bench decode batches (-npl) and its prompt and decode lengths.
LLAMA_BATCHES = (1, 2, 4, 8, 16, 32, 64)
LLAMA_PROMPT = 128
LLAMA_DECODE = 128
#: llama-batched-bench's ubatch (-ub): the most tokens one llama.cpp graph evaluation takes.
LLAMA_UBATCH = 512
#: The end-to-end model: Qwen3.5-27B widths, 4 layers (3 GDN + 1 attention), vocabulary 256.
MODEL_LAYERS = 4
MODEL_VOCAB = 256
#: The PyTorch layer's streams: the serial order, and qkv / z / beta / alpha on four streams.
TORCH_STREAMS = (1, 4)


@dataclass(frozen=True)
class GdnDims:
    """A GDN layer's sizes (gdn-reference §0)."""

    d_model: int
    hk: int
    hv: int
    dk: int
    dv: int
    conv_kernel: int

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> GdnDims:
        return cls(
            d_model=cfg.n_embd,
            hk=cfg.ssm_n_group,
            hv=cfg.ssm_dt_rank,
            dk=cfg.ssm_d_state,
            dv=cfg.value_dim // cfg.ssm_dt_rank,
            conv_kernel=cfg.ssm_d_conv,
        )

    @property
    def key_dim(self) -> int:
        return self.hk * self.dk

    @property
    def value_dim(self) -> int:
        return self.hv * self.dv

    @property
    def conv_dim(self) -> int:
        return 2 * self.key_dim + self.value_dim

    @property
    def projection_params(self) -> int:
        """P of gdn-reference §6: in-projections (qkv, z, b, a) and out_proj."""
        d = self.d_model
        return d * (2 * self.key_dim + 2 * self.value_dim + 2 * self.hv) + self.value_dim * d

    @property
    def state_bytes(self) -> int:
        """One sequence's fp32 recurrent state."""
        return 4 * self.hv * self.dk * self.dv


def qwen35_27b() -> GdnDims:
    return GdnDims.from_config(get_config("qwen3.5-27b"))


def peer_model_config() -> ModelConfig:
    """The end-to-end model both llama.cpp and LACE run: 27B widths, 4 layers, vocabulary 256."""
    return get_config("qwen3.5-27b").replace(
        name="qwen3.5-27b-4l-v256", n_layer=MODEL_LAYERS, n_vocab=MODEL_VOCAB
    )


def prompt_ubatches(
    batch: int, prompt: int = LLAMA_PROMPT, ubatch: int = LLAMA_UBATCH
) -> tuple[int, ...]:
    """Sequences per ubatch of batched-bench's prompt phase: `batch` sequences of `prompt`
    tokens, split into ubatches of at most `ubatch` tokens holding whole sequences (llama.cpp
    splits a recurrent model's batch by sequence), e.g. B = 8 of 128 tokens → (4, 4)."""
    if batch < 1 or prompt < 1 or ubatch < 1:
        raise LaceError(f"batch, prompt and ubatch must be ≥ 1, got {batch}, {prompt}, {ubatch}")
    per = max(1, ubatch // prompt)
    full, rest = divmod(batch, per)
    return (per,) * full + ((rest,) if rest else ())


def _us(nbytes: float, bytes_per_s: float) -> float:
    return nbytes / bytes_per_s * 1e6


def core_floor_us(dims: GdnDims, batch: int, bytes_per_s: float = H200_COPY_BYTES_PER_S) -> float:
    """The core's decode floor: every state read and written once."""
    return _us(2 * batch * dims.state_bytes, bytes_per_s)


def layer_floor_us(
    dims: GdnDims,
    batch: int,
    weight_bytes: int = 2,
    conv_state_bytes: int = 2,
    bytes_per_s: float = H200_COPY_BYTES_PER_S,
) -> float:
    """A decode layer's floor (gdn-reference §6.1): every projection and conv weight once,
    and per sequence the recurrent state read and written, the conv state's W−1 columns read
    and one written, and the input and output rows."""
    weights = weight_bytes * (dims.projection_params + dims.conv_kernel * dims.conv_dim)
    weights += 4 * (2 * dims.hv + dims.dv)  # A_log, dt_bias, norm weight (fp32)
    per_seq = 2 * dims.state_bytes
    per_seq += conv_state_bytes * dims.conv_kernel * dims.conv_dim
    per_seq += 2 * weight_bytes * dims.d_model
    return _us(weights + batch * per_seq, bytes_per_s)


def model_floor_us(
    cfg: ModelConfig,
    batch: int,
    weight_bytes_total: int,
    kv_tokens: int,
    bytes_per_s: float = H200_COPY_BYTES_PER_S,
) -> float:
    """A decode step of the end-to-end model: every weight once, every GDN layer's recurrent
    state read and written, and the attention layers' K and V rows of `kv_tokens` cached tokens
    read (f16 cache), per sequence."""
    n_gdn = sum(1 for il in range(cfg.n_layer) if cfg.is_recurrent(il))
    n_attn = cfg.n_layer - n_gdn
    dims = GdnDims.from_config(cfg)
    state = 2 * dims.state_bytes + 4 * cfg.n_embd_r * 2  # recurrent + conv state, read + write
    kv = 2 * 2 * cfg.n_head_kv * cfg.head_dim * kv_tokens
    per_seq = n_gdn * state + n_attn * kv
    return _us(weight_bytes_total + batch * per_seq, bytes_per_s)
