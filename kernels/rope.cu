// rope.cu — partial rotary position embedding, NeoX (split-half) form (ggml ROPE as LACE runs it).
//
// What: for each head row x[0..ne0) of token i2 at position p = pos[i2], the first n_rot dims
// rotate in pairs (i, i + n_rot/2), i < n_rot/2, by θ_i = p · base^(−2i/n_rot):
//     y_i = x_i cos θ_i − x_{i+h} sin θ_i,    y_{i+h} = x_i sin θ_i + x_{i+h} cos θ_i
// and dims ≥ n_rot pass through (Qwen3.5: head 256, n_rot 64). θ and its sine/cosine are computed
// in double precision, so the rotation matches the float64 reference to f32 rounding at any
// position. Qwen3.5's M-RoPE with equal positions in its sections (text) is this rotation.
//
// Shape legend: x, dst [ne0 = head dim, ne1 = heads, ne2 = tokens, ne3]; pos i32 [≥ ne2] (the
// first ne2 entries are the tokens' positions). Byte strides, any views.
//
// Launch: 1-D grid-stride loop over ne1·ne2·ne3 rows × (n_rot/2 + ne0 − n_rot) work items; one
// thread owns a whole rotated pair, so the op is safe in place (dst on x's bytes, same layout).
#include "common.cuh"

extern "C" __global__ void rope_neox_f32(TEN(d), TEN(x), TEN(pos), int n_rot, double freq_base) {
    const Ten D = MKTEN(d), X = MKTEN(x), P = MKTEN(pos);
    const i64 half = n_rot / 2;
    const i64 per_row = half + (X.n[0] - n_rot);
    const i64 rows = X.n[1] * X.n[2] * X.n[3];
    const i64 n = rows * per_row;
    for (i64 w = global_thread(); w < n; w += grid_threads()) {
        const i64 e = w % per_row, row = w / per_row;
        const i64 i1 = row % X.n[1], i2 = (row / X.n[1]) % X.n[2], i3 = row / (X.n[1] * X.n[2]);
        if (e < half) {
            const double p = (double)load_i<DT_I32>(P.at(i2, 0, 0, 0));
            const double theta = p * pow(freq_base, -2.0 * (double)e / (double)n_rot);
            double sn, cs;
            sincos(theta, &sn, &cs);
            const float x0 = load_f<DT_F32>(X.at(e, i1, i2, i3));
            const float x1 = load_f<DT_F32>(X.at(e + half, i1, i2, i3));
            store_f<DT_F32>(D.at(e, i1, i2, i3), (float)((double)x0 * cs - (double)x1 * sn));
            store_f<DT_F32>(D.at(e + half, i1, i2, i3), (float)((double)x0 * sn + (double)x1 * cs));
        } else {
            const i64 i0 = n_rot + (e - half);
            store_f<DT_F32>(D.at(i0, i1, i2, i3), load_f<DT_F32>(X.at(i0, i1, i2, i3)));
        }
    }
}
