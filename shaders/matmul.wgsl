// y[m, n_off + n] = epilogue(sum_k x[m, k] * W[n, k] + bias[bias_off + n]) with PyTorch's [out, in]
// weight layout. `gemm`: 128x128 tiles for many rows; `gemv`: one workgroup per 8 output
// columns for a few rows (decode). Flags: F16 (f16 activations, needs SHADER_F16), W_F16 (f16
// weights read as packed u32 pairs: works on every adapter), VEC (gemv with 16-byte loads; the
// host picks it when K and the offsets are multiples of 8), NORM and GLU (gemv fusions, below),
// ROPE (gemv with NORM over a q | k | v row: rotary embedding and KV cache append, gemv_common).
// Accumulation is always f32.

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

// Y_F32 (GEMV rows only): f32 output from f16 activations (the logits, so sampling reads them
// unrounded and no widening dispatch follows).
#ifdef Y_F32
alias Y = f32;
#else
alias Y = T;
#endif

#include matmul_params

@group(0) @binding(0) var<uniform> p: MatmulParams;
#ifdef VEC
@group(0) @binding(1) var<storage, read> x4: array<vec4<T>>;
#ifdef W_F16
@group(0) @binding(2) var<storage, read> w4: array<vec4<u32>>;
#else
@group(0) @binding(2) var<storage, read> w4: array<vec4<f32>>;
#endif
#else
@group(0) @binding(1) var<storage, read> x: array<T>;
#ifdef W_F16
@group(0) @binding(2) var<storage, read> w: array<u32>;
#else
@group(0) @binding(2) var<storage, read> w: array<f32>;
#endif
#endif
#ifdef ROPE
// gemv with ROPE (and NORM): no bias; the rotation's frequencies in its place.
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;
#else
@group(0) @binding(3) var<storage, read> bias: array<f32>;
#endif
@group(0) @binding(4) var<storage, read_write> y: array<Y>;
#ifdef NORM
// gemv with NORM: x is the raw residual row; the product is of rmsnorm(x) * g (weight), so the
// norm costs no dispatch of its own. VEC only.
@group(0) @binding(5) var<storage, read> g4: array<vec4<f32>>;
#endif
#ifdef ROPE
@group(0) @binding(6) var<storage, read> seq: array<u32>;
@group(0) @binding(7) var<storage, read_write> cache: array<T>;
#endif

#include gelu
#ifndef ROPE
#include epilogue
#endif
#include sincos


#ifndef VEC
#ifdef W_F16
fn w_at(i: u32) -> f32 {
    let h = unpack2x16float(w[i >> 1u]);
    return select(h.x, h.y, (i & 1u) == 1u);
}
#else
fn w_at(i: u32) -> f32 {
    return w[i];
}
#endif

// ---- tiled GEMM: 256 invocations, 128x128 output tile, 8x8 per invocation ----
// Tiles are stored k-major as vec4 so each invocation reads its 8 rows of x and 8 columns
// of W with four 16-byte loads per k and does 64 FMAs on 16 named vec4 accumulators (no
// dynamically indexed register arrays, which drivers may spill to memory).
const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 16u;
var<workgroup> As: array<array<vec4<f32>, 32>, BK>;
var<workgroup> Bs: array<array<vec4<f32>, 32>, BK>;

@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let tx = lid % 16u;
    let ty = lid / 16u;
    // Loader: each invocation fetches 8 consecutive k of one row of x and one row of W.
    let lr = lid >> 1u;
    let lk = (lid & 1u) * 8u;
    let am = m0 + lr;
    let bn = n0 + lr;
    var c00 = vec4<f32>(0.0); var c01 = vec4<f32>(0.0); var c10 = vec4<f32>(0.0); var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0); var c21 = vec4<f32>(0.0); var c30 = vec4<f32>(0.0); var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0); var c41 = vec4<f32>(0.0); var c50 = vec4<f32>(0.0); var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0); var c61 = vec4<f32>(0.0); var c70 = vec4<f32>(0.0); var c71 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var i = 0u; i < 8u; i++) {
            let k = k0 + lk + i;
            var av = 0.0;
            if (am < p.m && k < p.k) {
                av = f32(x[p.x_off + am * p.x_stride + k]);
            }
            As[lk + i][lr >> 2u][lr & 3u] = av;
            var bv = 0.0;
            if (bn < p.n && k < p.k) {
                bv = w_at(bn * p.k + k);
            }
            Bs[lk + i][lr >> 2u][lr & 3u] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            // Rows 4ty..4ty+3 and 64+4ty..; columns 4tx..4tx+3 and 64+4tx..
            let a0 = As[kk][ty];
            let a1 = As[kk][ty + 16u];
            let b0 = Bs[kk][tx];
            let b1 = Bs[kk][tx + 16u];
            c00 = fma(vec4<f32>(a0.x), b0, c00); c01 = fma(vec4<f32>(a0.x), b1, c01);
            c10 = fma(vec4<f32>(a0.y), b0, c10); c11 = fma(vec4<f32>(a0.y), b1, c11);
            c20 = fma(vec4<f32>(a0.z), b0, c20); c21 = fma(vec4<f32>(a0.z), b1, c21);
            c30 = fma(vec4<f32>(a0.w), b0, c30); c31 = fma(vec4<f32>(a0.w), b1, c31);
            c40 = fma(vec4<f32>(a1.x), b0, c40); c41 = fma(vec4<f32>(a1.x), b1, c41);
            c50 = fma(vec4<f32>(a1.y), b0, c50); c51 = fma(vec4<f32>(a1.y), b1, c51);
            c60 = fma(vec4<f32>(a1.z), b0, c60); c61 = fma(vec4<f32>(a1.z), b1, c61);
            c70 = fma(vec4<f32>(a1.w), b0, c70); c71 = fma(vec4<f32>(a1.w), b1, c71);
        }
        workgroupBarrier();
    }
    let r0 = m0 + 4u * ty;
    let r1 = m0 + 64u + 4u * ty;
    let q0 = n0 + 4u * tx;
    let q1 = n0 + 64u + 4u * tx;
    store4(r0, q0, c00); store4(r0, q1, c01);
    store4(r0 + 1u, q0, c10); store4(r0 + 1u, q1, c11);
    store4(r0 + 2u, q0, c20); store4(r0 + 2u, q1, c21);
    store4(r0 + 3u, q0, c30); store4(r0 + 3u, q1, c31);
    store4(r1, q0, c40); store4(r1, q1, c41);
    store4(r1 + 1u, q0, c50); store4(r1 + 1u, q1, c51);
    store4(r1 + 2u, q0, c60); store4(r1 + 2u, q1, c61);
    store4(r1 + 3u, q0, c70); store4(r1 + 3u, q1, c71);
}

fn store4(m: u32, n: u32, v: vec4<f32>) {
    if (m >= p.m) { return; }
    if (n < p.n) { finish(m, n, v.x); }
    if (n + 1u < p.n) { finish(m, n + 1u, v.y); }
    if (n + 2u < p.n) { finish(m, n + 2u, v.z); }
    if (n + 3u < p.n) { finish(m, n + 3u, v.w); }
}
#endif

// ---- GEMV: row m = workgroup z; 8 groups of 32 lanes, CPG weight rows per group ----
// Lanes stride over K (16-byte loads, software-pipelined, with VEC; else UNROLL (1, 2, 4) chunks per step), keeping CPG sums;
// the 32 lanes of a group are combined with subgroupAdd (flag SUBGROUPS: only when the
// adapter's subgroups are exactly 32 wide) or through workgroup memory with one barrier.
// GLU (SwiGLU fused, CPG 2 or 4): W is gate's rows over up's (p.n each); a group's rows come
// in pairs j, p.n + j and it writes silu(gate_j) * up_j to column j of y ([M, p.n]).
override CPG: u32 = 4u;
override UNROLL: u32 = 1u;
#include gemv_common

#ifdef VEC
// 16-byte loads, software-pipelined: each step requests the next chunk's weights before it
// uses this one's, so a lane's loads overlap.
struct X8 {
    a: vec4<f32>,
    b: vec4<f32>,
}

// x[k..k+8] (times g with NORM).
fn x8(xrow: u32, k: u32) -> X8 {
    let xi = (xrow + k) >> 2u;
#ifdef NORM
    return X8(vec4<f32>(x4[xi]) * g4[k >> 2u], vec4<f32>(x4[xi + 1u]) * g4[(k >> 2u) + 1u]);
#else
    return X8(vec4<f32>(x4[xi]), vec4<f32>(x4[xi + 1u]));
#endif
}

// One row's 8 weights at k as loaded (converted only where used, so the load can fly).
#ifdef W_F16
alias WRaw = vec4<u32>;
fn w_load(n: u32, k: u32) -> WRaw {
    return w4[(n * p.k + k) >> 3u];
}
fn w_dot(x: X8, q: WRaw) -> f32 {
    return dot(x.a, vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y))) +
        dot(x.b, vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)));
}
#else
struct WRaw {
    a: vec4<f32>,
    b: vec4<f32>,
}
fn w_load(n: u32, k: u32) -> WRaw {
    let wi = (n * p.k + k) >> 2u;
    return WRaw(w4[wi], w4[wi + 1u]);
}
fn w_dot(x: X8, q: WRaw) -> f32 {
    return dot(x.a, q.a) + dot(x.b, q.b);
}
#endif

// The group's CPG rows' weights at k.
struct W4 {
    r0: WRaw,
    r1: WRaw,
    r2: WRaw,
    r3: WRaw,
}
fn load_w4(n: vec4<u32>, k: u32) -> W4 {
    var w: W4;
    w.r0 = w_load(n.x, k);
    if (CPG > 1u) { w.r1 = w_load(n.y, k); }
    if (CPG > 2u) { w.r2 = w_load(n.z, k); w.r3 = w_load(n.w, k); }
    return w;
}

#ifdef NORM
fn square8(xrow: u32, k: u32) {
    let xi = (xrow + k) >> 2u;
    let xa = vec4<f32>(x4[xi]);
    let xb = vec4<f32>(x4[xi + 1u]);
    sumsq += dot(xa, xa) + dot(xb, xb);
}
#endif

// Sums of the group's rows (those below CPG) over this lane's chunk at k, weights `w`.
fn chunk4(xrow: u32, k: u32, w: W4) -> vec4<f32> {
#ifdef NORM
    square8(xrow, k);
#endif
    let x = x8(xrow, k);
    var s = vec4<f32>(w_dot(x, w.r0), 0.0, 0.0, 0.0);
    if (CPG > 1u) { s.y = w_dot(x, w.r1); }
    if (CPG > 2u) { s.z = w_dot(x, w.r2); s.w = w_dot(x, w.r3); }
    return s;
}

@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let at = gemv_at(wid, nwg, lid);
    let last = p.k - 8u;
    var k = at.lane * 8u;
    var w = load_w4(at.n, min(k, last));
    var s = vec4<f32>(0.0);
    for (; k < p.k; k += 256u) {
        let next = load_w4(at.n, min(k + 256u, last));
        s += chunk4(at.xrow, k, w);
        w = next;
    }
    gemv_reduce(at.m, lid, at.block, s);
}
#else
fn dot8(xrow: u32, n: u32, k: u32) -> f32 {
    return f32(x[xrow + k]) * w_at(n * p.k + k);
}

// Sums of weight rows n.x..n.w (those below CPG) at k.
fn chunk4(xrow: u32, n: vec4<u32>, k: u32) -> vec4<f32> {
    var s = vec4<f32>(dot8(xrow, n.x, k), 0.0, 0.0, 0.0);
    if (CPG > 1u) { s.y = dot8(xrow, n.y, k); }
    if (CPG > 2u) { s.z = dot8(xrow, n.z, k); s.w = dot8(xrow, n.w, k); }
    return s;
}

@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let at = gemv_at(wid, nwg, lid);
    let n = at.n;
    let xrow = at.xrow;
    let step = 32u;
    var s = vec4<f32>(0.0);
    var k = at.lane;
    // Main loop: UNROLL chunks with unconditional loads (UNROLL is a pipeline constant, so the
    // branches fold away) so a lane has UNROLL loads of a row in flight at once.
    for (; k + (UNROLL - 1u) * step < p.k; k += UNROLL * step) {
        var a = chunk4(xrow, n, k);
        if (UNROLL > 1u) { a += chunk4(xrow, n, k + step); }
        if (UNROLL > 2u) { a += chunk4(xrow, n, k + 2u * step) + chunk4(xrow, n, k + 3u * step); }
        s += a;
    }
    for (; k < p.k; k += step) {
        s += chunk4(xrow, n, k);
    }
    gemv_reduce(at.m, lid, at.block, s);
}
#endif
