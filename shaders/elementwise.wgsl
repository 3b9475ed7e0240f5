// Element-wise kernels on strided row views: y[r, c] = f(a[a_off + r*a_stride + c], ...).
// Activations are f32 or (flag F16) f16; arithmetic is f32.

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

struct EltParams {
    rows: u32,
    cols: u32,
    a_off: u32,
    a_stride: u32,
    b_off: u32,
    b_stride: u32,
    y_off: u32,
    y_stride: u32,
}

@group(0) @binding(0) var<uniform> p: EltParams;
@group(0) @binding(1) var<storage, read> a: array<T>;
#ifdef BINARY
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;
#else
@group(0) @binding(2) var<storage, read_write> y: array<T>;
#endif

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

// Linear element index for this invocation, or false past the end.
fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> vec2<u32> {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    return vec2<u32>(i, u32(i < p.rows * p.cols));
}

#ifdef BINARY
@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = element(wid, nwg, lid);
    if (e.y == 0u) { return; }
    let r = e.x / p.cols;
    let c = e.x % p.cols;
    y[p.y_off + r * p.y_stride + c] = T(f32(a[p.a_off + r * p.a_stride + c]) + f32(b[p.b_off + r * p.b_stride + c]));
}

// SwiGLU's gate: silu(a) * b.
@compute @workgroup_size(256)
fn silu_mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = element(wid, nwg, lid);
    if (e.y == 0u) { return; }
    let r = e.x / p.cols;
    let c = e.x % p.cols;
    y[p.y_off + r * p.y_stride + c] = T(silu_f(f32(a[p.a_off + r * p.a_stride + c])) * f32(b[p.b_off + r * p.b_stride + c]));
}
#else
@compute @workgroup_size(256)
fn gelu_erf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = element(wid, nwg, lid);
    if (e.y == 0u) { return; }
    let r = e.x / p.cols;
    let c = e.x % p.cols;
    y[p.y_off + r * p.y_stride + c] = T(gelu_erf_f(f32(a[p.a_off + r * p.a_stride + c])));
}

@compute @workgroup_size(256)
fn gelu_tanh(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = element(wid, nwg, lid);
    if (e.y == 0u) { return; }
    let r = e.x / p.cols;
    let c = e.x % p.cols;
    y[p.y_off + r * p.y_stride + c] = T(gelu_tanh_f(f32(a[p.a_off + r * p.a_stride + c])));
}

@compute @workgroup_size(256)
fn silu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = element(wid, nwg, lid);
    if (e.y == 0u) { return; }
    let r = e.x / p.cols;
    let c = e.x % p.cols;
    y[p.y_off + r * p.y_stride + c] = T(silu_f(f32(a[p.a_off + r * p.a_stride + c])));
}
#endif
