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

#include gelu

// Linear element index for this invocation, or false past the end.
fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> vec2<u32> {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    return vec2<u32>(i, u32(i < p.rows * p.cols));
}

// OP is a pipeline constant. unary: 0 GELU (erf), 1 GELU (tanh), 2 SiLU;
// binary: 0 add, 1 silu(a) * b (SwiGLU's gate).
override OP: u32 = 0u;

#ifdef BINARY
@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = element(wid, nwg, lid);
    if (e.y == 0u) { return; }
    let r = e.x / p.cols;
    let c = e.x % p.cols;
    let av = f32(a[p.a_off + r * p.a_stride + c]);
    let bv = f32(b[p.b_off + r * p.b_stride + c]);
    y[p.y_off + r * p.y_stride + c] = T(select(av + bv, silu_f(av) * bv, OP == 1u));
}
#else
@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = element(wid, nwg, lid);
    if (e.y == 0u) { return; }
    let r = e.x / p.cols;
    let c = e.x % p.cols;
    let x = f32(a[p.a_off + r * p.a_stride + c]);
    var v: f32;
    switch (OP) {
        case 0u: { v = gelu_erf_f(x); }
        case 1u: { v = gelu_tanh_f(x); }
        default: { v = silu_f(x); }
    }
    y[p.y_off + r * p.y_stride + c] = T(v);
}
#endif
