"""The GDN decode layer as a PyTorch user writes it: torch ops for the projections, the short
conv, the gates and the gated RMSNorm, and fla's `fused_recurrent_gated_delta_rule` for the
core (gdn-reference §1, transformers' parameter layout: value head h reads key head h // r).

`TorchGdnLayer.step(x, streams)` is one decode step for B sequences (one token each) with the
conv and recurrent states updated in place, so it can be captured in a CUDA graph and replayed:
on one stream, or with the four input projections (qkv → conv, z, β, α → g) on four streams
joined before the core and before the gated norm. `core="torch"` swaps fla's kernel for
`reference_gdn` (float64 loop), which runs on any device: CI-free checks on the CPU use it.
torch is imported inside the functions, so importing this module needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from concurrency.peers.cases import GdnDims

CORES = ("fla", "torch")
RMS_EPS = 1e-6


def reference_gdn(q: Any, k: Any, v: Any, g: Any, beta: Any, state: Any) -> tuple[Any, Any]:
    """The gated delta rule (gdn-reference §2.1) in float64, with the in-kernel L2 norm of q
    and k (eps inside the root), q scaled by dk^−½, and grouped heads (value head h reads key
    head h // r). q, k [B, T, Hk, dk]; v [B, T, Hv, dv]; g, beta [B, T, Hv]; state
    [B, Hv, dk, dv]. Returns (o [B, T, Hv, dv] float64, final state float64)."""
    import torch

    f = torch.float64
    q, k, v, g, beta, s = (t.to(f) for t in (q, k, v, g, beta, state))
    hk, hv, dk = q.shape[2], v.shape[2], q.shape[3]
    r = hv // hk
    qn = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6) * dk**-0.5
    kn = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    qn = qn.repeat_interleave(r, dim=2)
    kn = kn.repeat_interleave(r, dim=2)
    out = torch.empty(v.shape, dtype=f, device=v.device)
    for t in range(q.shape[1]):
        s = s * torch.exp(g[:, t])[:, :, None, None]
        read = torch.einsum("bhkv,bhk->bhv", s, kn[:, t])
        delta = beta[:, t][..., None] * (v[:, t] - read)
        s = s + torch.einsum("bhk,bhv->bhkv", kn[:, t], delta)
        out[:, t] = torch.einsum("bhkv,bhk->bhv", s, qn[:, t])
    return out, s


@dataclass
class TorchGdnLayer:
    """Weights (transformers' layout) and per-sequence states of one GDN layer."""

    dims: GdnDims
    batch: int
    params: dict[str, Any]
    conv_state: Any  # [B, C, W−1], the previous W−1 qkv rows
    state: Any  # [B, Hv, dk, dv] fp32
    core: str = "fla"

    @classmethod
    def random(
        cls,
        dims: GdnDims,
        batch: int,
        *,
        device: str = "cuda",
        dtype: Any = None,
        core: str = "fla",
        seed: int = 0,
    ) -> TorchGdnLayer:
        """Random weights of a plausible spread (matrices N(0, 1/d)), states N(0, 0.1)."""
        import torch

        if core not in CORES:
            raise ValueError(f"core must be one of {CORES}, not {core!r}")
        dtype = dtype or torch.bfloat16
        gen = torch.Generator(device="cpu").manual_seed(seed)
        d, c, vd, hv = dims.d_model, dims.conv_dim, dims.value_dim, dims.hv

        def rnd(*shape: int, std: float, dt: Any = dtype) -> Any:
            return (torch.randn(*shape, generator=gen) * std).to(device=device, dtype=dt)

        params = {
            "in_proj_qkv": rnd(c, d, std=d**-0.5),
            "in_proj_z": rnd(vd, d, std=d**-0.5),
            "in_proj_b": rnd(hv, d, std=d**-0.5),
            "in_proj_a": rnd(hv, d, std=d**-0.5),
            "conv1d": rnd(c, dims.conv_kernel, std=0.3),
            "A_log": rnd(hv, std=0.5, dt=torch.float32),
            "dt_bias": rnd(hv, std=0.5, dt=torch.float32),
            "norm": (1.0 + rnd(dims.dv, std=0.1, dt=torch.float32)).to(dtype),
            "out_proj": rnd(d, vd, std=vd**-0.5),
        }
        conv_state = rnd(batch, c, dims.conv_kernel - 1, std=0.1)
        state = rnd(batch, hv, dims.dk, dims.dv, std=0.1, dt=torch.float32)
        return cls(dims, batch, params, conv_state, state, core)

    @classmethod
    def from_transformers(cls, module: Any, batch: int, core: str = "torch") -> TorchGdnLayer:
        """The same layer as a transformers `Qwen3_5GatedDeltaNet` (its weights, zero states)."""
        import torch

        dims = GdnDims(
            d_model=module.hidden_size,
            hk=module.num_k_heads,
            hv=module.num_v_heads,
            dk=module.head_k_dim,
            dv=module.head_v_dim,
            conv_kernel=module.conv_kernel_size,
        )
        w = module.in_proj_qkv.weight
        params = {
            "in_proj_qkv": w.detach().clone(),
            "in_proj_z": module.in_proj_z.weight.detach().clone(),
            "in_proj_b": module.in_proj_b.weight.detach().clone(),
            "in_proj_a": module.in_proj_a.weight.detach().clone(),
            "conv1d": module.conv1d.weight.detach()[:, 0, :].clone(),
            "A_log": module.A_log.detach().float().clone(),
            "dt_bias": module.dt_bias.detach().float().clone(),
            "norm": module.norm.weight.detach().clone(),
            "out_proj": module.out_proj.weight.detach().clone(),
        }
        conv_state = torch.zeros(
            batch, dims.conv_dim, dims.conv_kernel - 1, dtype=w.dtype, device=w.device
        )
        state = torch.zeros(batch, dims.hv, dims.dk, dims.dv, dtype=torch.float32, device=w.device)
        return cls(dims, batch, params, conv_state, state, core)

    # ------------------------------------------------------------------ pieces
    def _qkv_conv(self, x: Any) -> tuple[Any, Any, Any]:
        import torch
        import torch.nn.functional as F

        p, d, b = self.params, self.dims, self.batch
        qkv = x @ p["in_proj_qkv"].t()  # [B, C]
        window = torch.cat([self.conv_state, qkv[:, :, None]], dim=-1)  # [B, C, W]
        self.conv_state.copy_(window[:, :, 1:])
        mixed = F.silu((window.float() * p["conv1d"].float()).sum(-1)).to(x.dtype)
        q, k, v = torch.split(mixed, [d.key_dim, d.key_dim, d.value_dim], dim=-1)
        return (
            q.reshape(b, 1, d.hk, d.dk),
            k.reshape(b, 1, d.hk, d.dk),
            v.reshape(b, 1, d.hv, d.dv),
        )

    def _z(self, x: Any) -> Any:
        return (x @ self.params["in_proj_z"].t()).reshape(self.batch, 1, self.dims.hv, self.dims.dv)

    def _beta(self, x: Any) -> Any:
        return (x @ self.params["in_proj_b"].t()).sigmoid().reshape(self.batch, 1, self.dims.hv)

    def _gate(self, x: Any) -> Any:
        import torch.nn.functional as F

        p = self.params
        a = (x @ p["in_proj_a"].t()).float()
        g = -p["A_log"].exp() * F.softplus(a + p["dt_bias"])
        return g.reshape(self.batch, 1, self.dims.hv)

    def _core(self, q: Any, k: Any, v: Any, g: Any, beta: Any) -> Any:
        if self.core == "torch":
            o, s = reference_gdn(q, k, v, g, beta, self.state)
            self.state.copy_(s)
            return o.to(v.dtype)
        from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule

        o, s = fused_recurrent_gated_delta_rule(
            q=q,
            k=k,
            v=v,
            g=g,
            beta=beta,
            initial_state=self.state,
            output_final_state=True,
            use_qk_l2norm_in_kernel=True,
        )
        self.state.copy_(s)
        return o

    def _norm_out(self, o: Any, z: Any) -> Any:
        import torch
        import torch.nn.functional as F

        # as transformers' Qwen3_5RMSNormGated: normalize in fp32, back to the model dtype,
        # times the weight, times SiLU(z) in fp32, back to the model dtype
        dtype = z.dtype
        of = o.float()
        normed = (of * torch.rsqrt(of.pow(2).mean(-1, keepdim=True) + RMS_EPS)).to(dtype)
        y = (self.params["norm"] * normed * F.silu(z.float())).to(dtype)
        return y.reshape(self.batch, self.dims.value_dim) @ self.params["out_proj"].t()

    # ------------------------------------------------------------------ the step
    def step(self, x: Any, streams: tuple[Any, ...] = ()) -> Any:
        """One decode step of x [B, d] → y [B, d], states updated in place. With three side
        `streams`, z, β and α → g run on them while qkv → conv runs on the current stream."""
        if not streams:
            q, k, v = self._qkv_conv(x)
            z = self._z(x)
            beta = self._beta(x)
            g = self._gate(x)
            return self._norm_out(self._core(q, k, v, g, beta), z)
        import torch

        if len(streams) != 3:
            raise ValueError("the four-stream step takes exactly three side streams")
        main = torch.cuda.current_stream()
        for s in streams:
            s.wait_stream(main)
        with torch.cuda.stream(streams[0]):
            z = self._z(x)
        with torch.cuda.stream(streams[1]):
            beta = self._beta(x)
        with torch.cuda.stream(streams[2]):
            g = self._gate(x)
        q, k, v = self._qkv_conv(x)
        main.wait_stream(streams[1])
        main.wait_stream(streams[2])
        o = self._core(q, k, v, g, beta)
        main.wait_stream(streams[0])
        return self._norm_out(o, z)


def relative_error(ref: Any, x: Any) -> float:
    """‖ref − x‖ / ‖ref‖ in float64 (fla's ratio metric)."""
    import torch

    r, y = ref.to(torch.float64), x.to(torch.float64)
    return float(torch.linalg.norm(r - y) / max(float(torch.linalg.norm(r)), 1e-300))


def small_transformers_layer(device: str, seed: int = 0) -> Any:
    """transformers' `Qwen3_5GatedDeltaNet` at small dims (r = 2, dk ≠ dv), fp32, with every
    parameter re-drawn (the default init hides ordering bugs; gdn-reference §5.2)."""
    import torch
    from transformers.models.qwen3_5.configuration_qwen3_5 import Qwen3_5TextConfig
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5GatedDeltaNet

    torch.manual_seed(seed)
    cfg = Qwen3_5TextConfig(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        vocab_size=100,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=16,
        linear_value_head_dim=32,
        linear_conv_kernel_dim=4,
    )
    module = Qwen3_5GatedDeltaNet(cfg, layer_idx=0).float().to(device)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name == "A_log":
                p.copy_(torch.randn_like(p) * 0.5)
            else:
                p.copy_(torch.randn_like(p) * 0.3)
    return module


def _steps(layer: TorchGdnLayer, x: Any) -> Any:
    import torch

    with torch.no_grad():
        return torch.stack([layer.step(x[:, t].contiguous()) for t in range(x.shape[1])], dim=1)


def check_against_transformers(
    device: str = "cuda", core: str = "fla", tokens: int = 4, seed: int = 0
) -> float:
    """Relative error of `tokens` decode steps of this layer against transformers'
    `Qwen3_5GatedDeltaNet` run on the same tokens at once (no cache, zero initial states)."""
    import torch

    module = small_transformers_layer(device, seed)
    x = torch.randn(2, tokens, module.hidden_size, device=device)
    with torch.no_grad():
        ref = module(x)
    return relative_error(ref, _steps(TorchGdnLayer.from_transformers(module, 2, core=core), x))


def check_cores(device: str = "cuda", tokens: int = 4, seed: int = 0) -> float:
    """Relative error of the layer with fla's kernel against the same layer with the float64
    `reference_gdn` core (which matches transformers on the CPU): independent of whichever
    implementation transformers dispatches to."""
    import torch

    module = small_transformers_layer(device, seed)
    x = torch.randn(2, tokens, module.hidden_size, device=device)
    ref = _steps(TorchGdnLayer.from_transformers(module, 2, core="torch"), x)
    return relative_error(ref, _steps(TorchGdnLayer.from_transformers(module, 2, core="fla"), x))
