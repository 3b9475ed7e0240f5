// Attention's parameters, shared by attention.wgsl and attention_decode.wgsl (`AttnParams` in
// src/ops/attention.rs; tests/shaders.rs checks the layout).
struct AttnParams {
    m: u32,
    heads: u32,
    kv_heads: u32,
    causal: u32,
    q_off: u32,
    q_stride: u32,
    k_off4: u32,
    k_stride4: u32,
    v_off4: u32,
    v_stride4: u32,
    o_off: u32,
    o_stride: u32,
    scale: f32,
    splits: u32,
    split_len: u32,
    _pad: u32,
}
