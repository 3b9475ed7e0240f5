// Activations shared by elementwise.wgsl and the matmul kernels (inserted by `#include gelu`):
// GELU for the epilogue, SiLU for SwiGLU (GLU GEMVs and the SiluMul kernel compute it alike).

// erf with |error| < 1.2e-7 relative to erfc (Chebyshev fit, Numerical Recipes' erfcc form):
// accurate enough that GELU matches torch's exact-erf GELU to 1e-6.
fn erf_f32(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}

fn gelu_erf_f(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_f32(x * 0.70710678118654752));
}

fn gelu_tanh_f(x: f32) -> f32 {
    // Clamped: some tanh implementations overflow to NaN for large arguments.
    let u = clamp(0.79788456080286536 * (x + 0.044715 * x * x * x), -15.0, 15.0);
    return 0.5 * x * (1.0 + tanh(u));
}

fn silu_f(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}
