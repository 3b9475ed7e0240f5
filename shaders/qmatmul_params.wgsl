// The quantised linear layers' parameters, shared by qmatmul.wgsl and qmatmul_coop.wgsl
// (`QMatmulParams` in src/ops/qmatmul.rs; tests/shaders.rs checks the layout).
struct QMatmulParams {
    m: u32,
    n: u32,
    k: u32,
    x_off: u32,
    x_stride: u32,
    y_off: u32,
    y_stride: u32,
    n_off: u32,
    bias_off: u32,
    // bit 0: add bias; bit 1: add the previous y (residual)
    flags: u32,
    // 0: none, 1: GELU (erf), 2: GELU (tanh)
    act: u32,
    // columns per scale
    group: u32,
    // u32 words of codes per row (a multiple of 4)
    row_words: u32,
    // groups per row
    row_groups: u32,
    // RMS norm epsilon (qgemv with NORM)
    eps: f32,
    _pad1: u32,
    // gemv with ROPE (a q | k | v row): head dim, heads rotated (q's and k's), k's first
    // column, and the KV cache's rows
    rope_dim: u32,
    rope_heads: u32,
    kv_col: u32,
    kv_cap: u32,
}
