// conv.cu — the short causal depthwise convolution of the Gated DeltaNet (ggml SSM_CONV).
//
// What:
//   ssm_conv_f32       out[c, t, s] = Σ_{j<W} sx[t + j, c, s] · w[j, c]
//   ssm_conv_silu_f32  the same followed by SiLU (the conv and its activation fused)
// `sx` is the conv input that ggml builds with CONCAT: the W−1 cached columns of each channel
// followed by the T new ones, so decode (T = 1, the state update) and prefill (any T, including
// T < W) are the same kernel; w[W−1] multiplies the current token (cross-correlation, as
// PyTorch's conv1d with left padding W−1). The state write-back (the last W−1 columns of sx into
// the conv cache) is a separate CPY node in ggml's graph.
//
// Shape legend: sx [W−1+T, C, n_seq], w [W, C] (f32), out [C, T, n_seq]; C = 2·H_k·S + H_v·S
// conv channels; byte strides, any views.
//
// Launch: 1-D grid-stride loop over out's C·T·n_seq elements (any grid × block), any W.
#include "common.cuh"

template <bool SILU>
__device__ void ssm_conv_body(const Ten d, const Ten sx, const Ten w) {
    const i64 n = d.nel();
    const int width = (int)w.n[0];
    for (i64 i = global_thread(); i < n; i += grid_threads()) {
        i64 c, t, s, unused;
        unravel(i, d.n, c, t, s, unused);
        float acc = 0.0f;
        for (int j = 0; j < width; ++j)
            acc += load_f<DT_F32>(sx.at(t + j, c, s, 0)) * load_f<DT_F32>(w.at(j, c, 0, 0));
        store_f<DT_F32>(d.at(c, t, s, 0), SILU ? silu_f(acc) : acc);
    }
}

extern "C" __global__ void ssm_conv_f32(TEN(d), TEN(sx), TEN(w)) {
    ssm_conv_body<false>(MKTEN(d), MKTEN(sx), MKTEN(w));
}
extern "C" __global__ void ssm_conv_silu_f32(TEN(d), TEN(sx), TEN(w)) {
    ssm_conv_body<true>(MKTEN(d), MKTEN(sx), MKTEN(w));
}
