//! Kernel checks: every kernel against a CPU f64 reference on seeded random inputs.
//!
//! They live in the library (not only under `tests/`) so the same checks run natively on
//! any adapter (`cargo test`, `dsvl-gpu selftest-kernels`) and in the browser through the
//! wasm build. Outputs are poisoned with NaN before each run, so unwritten elements fail.

use std::future::Future;
use std::pin::Pin;

use crate::error::Error;
use crate::gpu::{DType, Gpu, Tensor};

/// A failed check: what, where, by how much.
#[derive(Debug)]
pub struct CheckError(pub String);

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Error> for CheckError {
    fn from(e: Error) -> Self {
        CheckError(format!("GPU error: {e}"))
    }
}

impl From<String> for CheckError {
    fn from(s: String) -> Self {
        CheckError(s)
    }
}

pub type CheckResult = Result<String, CheckError>;
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = CheckResult> + 'a>>;
pub type CheckFn = for<'a> fn(&'a Gpu) -> CheckFuture<'a>;

/// Wraps an `async fn(&Gpu) -> CheckResult` as a `CheckFn` entry.
#[macro_export]
macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        pub const CHECKS: &[(&str, $crate::check::CheckFn)] = &[
            $((stringify!($name), |g| Box::pin($name(g)))),*
        ];
    };
}

/// Every kernel check, by name.
pub fn all() -> Vec<(&'static str, CheckFn)> {
    crate::ops::CHECK_SETS.iter().flat_map(|s| s.iter().copied()).collect()
}

/// Deterministic generator (SplitMix64) so failures reproduce from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit() as f32
    }
    pub fn normal(&mut self) -> f32 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    pub fn normals(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

/// Values as the GPU sees them: rounded through f16 when the tensor is f16.
pub fn round_to(dtype: DType, v: &[f32]) -> Vec<f32> {
    match dtype {
        DType::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        _ => v.to_vec(),
    }
}

/// |got - want| <= abs + rel * |want|, element-wise.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
}

/// Compares element-wise; fails on length mismatch, any NaN/Inf, or the first element out of
/// tolerance (printing its index). On success returns the max abs error.
pub fn compare(what: &str, got: &[f32], want: &[f64], tol: Tol) -> Result<f64, CheckError> {
    if got.len() != want.len() {
        return Err(CheckError(format!("{what}: {} values, expected {}", got.len(), want.len())));
    }
    let mut max_err = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !g.is_finite() {
            return Err(CheckError(format!("{what}: element {i} is {g} (unwritten or overflow), expected {w}")));
        }
        let err = (g as f64 - w).abs();
        if err > tol.abs + tol.rel * w.abs() {
            return Err(CheckError(format!(
                "{what}: element {i} = {g}, expected {w} (err {err:.3e} > {:.1e} + {:.1e}*|want|)",
                tol.abs, tol.rel
            )));
        }
        max_err = max_err.max(err);
    }
    Ok(max_err)
}

/// A pooled output tensor filled with NaN, so elements the kernel skips fail the check.
pub fn poisoned(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor, Error> {
    let t = Tensor::empty(gpu, shape, dtype)?;
    let bytes: Vec<u8> = match dtype {
        DType::F32 => f32::NAN.to_le_bytes().repeat(t.len()),
        DType::F16 => half::f16::NAN.to_le_bytes().repeat(t.len()),
        DType::U32 => u32::MAX.to_le_bytes().repeat(t.len()),
    };
    t.write_bytes(gpu, &bytes);
    Ok(t)
}

/// Activation dtypes this adapter can run (f16 needs SHADER_F16).
pub fn act_dtypes(gpu: &Gpu) -> Vec<DType> {
    if gpu.caps.f16 { vec![DType::F32, DType::F16] } else { vec![DType::F32] }
}

/// Like `compare`, with each element's bound scaled by its own magnitude `mag[i]` (for sums,
/// the sum of |terms|): |got - want| <= abs + rel * |want| + mag_rel * mag[i].
pub fn compare_mag(what: &str, got: &[f32], want: &[f64], mag: &[f64], tol: Tol, mag_rel: f64) -> Result<f64, CheckError> {
    if got.len() != want.len() || mag.len() != want.len() {
        return Err(CheckError(format!("{what}: {} values, expected {}", got.len(), want.len())));
    }
    let mut max_err = 0.0f64;
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        if !g.is_finite() {
            return Err(CheckError(format!("{what}: element {i} is {g} (unwritten or overflow), expected {w}")));
        }
        let err = (g as f64 - w).abs();
        let bound = tol.abs + tol.rel * w.abs() + mag_rel * m;
        if err > bound {
            return Err(CheckError(format!("{what}: element {i} = {g}, expected {w} (err {err:.3e} > bound {bound:.3e})")));
        }
        max_err = max_err.max(err);
    }
    Ok(max_err)
}
