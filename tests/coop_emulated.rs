//! The tensor-core kernels (cooperative matrices) run on `gpu::coop_emu`'s emulation where the
//! adapter has none (lavapipe in CI), so their index arithmetic is checked against the f64
//! references on every run, not only on a lent GPU. On an adapter with cooperative matrices
//! the same checks run on the real ones.
//!
//! One #[test] in its own binary: it switches kernel variants through environment variables
//! between checks, which must not race with other tests reading them.

mod common;

use dsvl_gpu::{Gpu, GpuOptions};

fn set(key: &str, value: &str) {
    // SAFETY: this binary runs a single test on a single thread (see above); nothing else reads
    // or writes the environment meanwhile.
    unsafe { std::env::set_var(key, value) };
}

#[test]
fn tensor_core_kernels_pass_their_checks() {
    let opts = GpuOptions { emulate_coop: true, ..GpuOptions::from_env() };
    let gpu = pollster::block_on(Gpu::new(&opts)).unwrap_or_else(|e| panic!("no GPU for tests: {e}"));
    assert!(gpu.caps.coop16, "{}: neither cooperative matrices nor SHADER_F16 to emulate them", gpu.adapter.name);
    // Every check that reaches a tensor-core kernel: the GEMMs (f16 and int4/int8, staged in two
    // steps through workgroup memory), the attention (vision and causal prefill, head dim 64/128).
    for check in ["check_linear", "check_linear_split", "check_linear_views", "check_qlinear", "check_qlinear_split", "check_attention_coop", "check_attention_vit", "check_attention_causal"] {
        common::run_check(&gpu, check);
    }
    // The opt-in variants: loads two k steps ahead (PIPE2); the direct-load GEMM (no staging).
    set("DSVL_GEMM_PIPE2", "1");
    common::run_check(&gpu, "check_linear");
    common::run_check(&gpu, "check_qlinear");
    set("DSVL_GEMM_PIPE2", "0");
    set("DSVL_COOP_STAGED", "0");
    common::run_check(&gpu, "check_linear");
    set("DSVL_COOP_STAGED", "1");
    let compiled = gpu.compiled_kernels();
    for want in [
        "matmul_coop_staged.gemm_coop_staged[BN64,F16]",
        "matmul_coop_staged.gemm_coop_staged[BN64,F16,PIPE2]",
        "matmul_coop.gemm_coop[F16]",
        "qmatmul_coop.qgemm_coop[BN64,F16,Q4,ZERO]",
        "qmatmul_coop.qgemm_coop[BN64,F16,PIPE2,Q4,ZERO]",
        "attention_coop.attn_coop[HD64]",
        "attention_coop.attn_coop[HD128]",
    ] {
        assert!(compiled.iter().any(|k| k.starts_with(want)), "{want} never ran; compiled: {compiled:#?}");
    }
}
