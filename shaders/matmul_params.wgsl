// The dense linear layers' parameters, shared by matmul.wgsl and matmul_coop.wgsl (`MatmulParams`
// in src/ops/matmul.rs; tests/shaders.rs checks the layout).
struct MatmulParams {
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
    // RMS norm epsilon (gemv with NORM)
    eps: f32,
    // gemv with ROPE (a q | k | v row): head dim, heads rotated (q's and k's), k's first
    // column, and the KV cache's rows
    rope_dim: u32,
    rope_heads: u32,
    kv_col: u32,
    kv_cap: u32,
}
