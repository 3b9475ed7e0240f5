//! Every kernel check from the library, on the default adapter (lavapipe in CI).
//! One #[test] per check, and a test that the list here is complete.

mod common;

macro_rules! kernel_tests {
    ($($name:ident),* $(,)?) => {
        $( #[test] fn $name() { common::run_check(common::gpu(), stringify!($name)); } )*
        const LISTED: &[&str] = &[$(stringify!($name)),*];
    };
}

kernel_tests!(
    check_unary,
    check_binary_strided,
    check_linear,
    check_linear_split,
    check_linear_views,
    check_rms_linear,
    check_linear_glu,
    check_norms,
    check_softmax,
    check_rope,
    check_rope_replay,
    check_rope_kv,
    check_rope_fused,
    check_attention_vit,
    check_attention_causal,
    check_attention_rel_pos,
    check_resize_bicubic,
    check_resize_aa_bilinear,
    check_embedding,
    check_argmax,
    check_repetition_penalty,
    check_gumbel_sampling,
    check_top_k,
    check_top_p,
    check_decode_replay,
    check_bandwidth_probes,
    check_convert,
    check_patchify,
    check_kv_write,
    check_channel_affine,
    check_qlinear,
    check_qlinear_split,
    check_qembed,
    check_qlinear_fused,
    check_window,
    check_im2col,
    check_attention_tiled,
    check_attention_coop,
    check_quantise,
);

#[test]
fn every_check_is_listed() {
    for (name, _) in dsvl_gpu::check::all() {
        assert!(LISTED.contains(&name), "check {name} has no #[test] in tests/kernels.rs");
    }
}
