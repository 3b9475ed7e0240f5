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

// VEC4 (binary): 4 consecutive elements per invocation, as 8- or 16-byte loads (the host picks it
// when the columns, offsets and strides are multiples of 4, so a vector never leaves its row).
#ifdef VEC4
alias V = vec4<T>;
const W: u32 = 4u;
#else
alias V = T;
const W: u32 = 1u;
#endif

@group(0) @binding(0) var<uniform> p: EltParams;
#ifdef BINARY
@group(0) @binding(1) var<storage, read> a: array<V>;
@group(0) @binding(2) var<storage, read> b: array<V>;
@group(0) @binding(3) var<storage, read_write> y: array<V>;
#else
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
#endif

#include gelu

// Linear index of this invocation's first element (W per invocation), or false past the end.
fn element(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> vec2<u32> {
    let i = ((wid.x + wid.y * nwg.x) * 256u + lid) * W;
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
    let av = a[(p.a_off + r * p.a_stride + c) / W];
    let bv = b[(p.b_off + r * p.b_stride + c) / W];
    let yi = (p.y_off + r * p.y_stride + c) / W;
#ifdef VEC4
    y[yi] = V(vec4<f32>(op2(f32(av.x), f32(bv.x)), op2(f32(av.y), f32(bv.y)), op2(f32(av.z), f32(bv.z)), op2(f32(av.w), f32(bv.w))));
#else
    y[yi] = T(op2(f32(av), f32(bv)));
#endif
}

fn op2(av: f32, bv: f32) -> f32 {
    return select(av + bv, silu_f(av) * bv, OP == 1u);
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
