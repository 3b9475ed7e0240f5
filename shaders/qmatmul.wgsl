// y[m, n_off + n] = epilogue(sum_k x[m, k] * deq(W)[n, k] + bias[bias_off + n]) with W packed
// (src/quant): dequantised on the fly, never materialised. `qgemv`: one workgroup per 8 * CPG
// output rows for a few rows of x (decode); `qgemm`: 128x128 tiles, W dequantised while staged
// into workgroup memory. Flags: Q4 (int4 codes, else int8), ZERO (int4 with offsets: d * q + m;
// without: d * (q - 8)), F16 (f16 activations, needs SHADER_F16), VEC (gemv reads x as vec4:
// K a multiple of 32 and x offsets of 4), SUBGROUPS (gemv reduces with subgroupAdd; 32-wide
// subgroups only), NORM and GLU (qgemv fusions as in matmul.wgsl's gemv: rmsnorm(x) * g as the
// input; SwiGLU over gate's rows stacked over up's; ROPE as there). Accumulation is f32; codes and scales are
// read as u32 on every adapter.

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

#include qmatmul_params

@group(0) @binding(0) var<uniform> p: QMatmulParams;
#ifdef VEC
@group(0) @binding(1) var<storage, read> x4: array<vec4<T>>;
#else
@group(0) @binding(1) var<storage, read> x: array<T>;
#endif
@group(0) @binding(2) var<storage, read> codes: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> scales: array<u32>;
#ifdef ROPE
// qgemv with ROPE (and NORM): no bias; the rotation's frequencies in its place.
@group(0) @binding(4) var<storage, read> inv_freq: array<f32>;
#else
@group(0) @binding(4) var<storage, read> bias: array<f32>;
#endif
@group(0) @binding(5) var<storage, read_write> y: array<Y>;
#ifdef NORM
// The norm weight (K a multiple of 4, so a vec4 never straddles K).
@group(0) @binding(6) var<storage, read> g4: array<vec4<f32>>;
#endif
#ifdef ROPE
@group(0) @binding(7) var<storage, read> seq: array<u32>;
@group(0) @binding(8) var<storage, read_write> cache: array<T>;
#endif

#include gelu
#ifndef ROPE
#include epilogue
#endif
#include sincos
#include qdecode

#ifdef ZERO
const OFF: f32 = 0.0;
#else
const OFF: f32 = 8.0;
#endif

// (d, m) of group g of row n (m = 0 without offsets).
fn scale_of(n: u32, g: u32) -> vec2<f32> {
    let i = n * p.row_groups + g;
#ifdef ZERO
    return scale_pair(i);
#else
    return vec2<f32>(scale_half(i), 0.0);
#endif
}


// ---- qgemv: row m = workgroup z; 8 groups of 32 lanes, CPG (1, 2, 4) weight rows per group ----
// Lane l takes 32-column chunks l, l + 32, ...: one 16-byte load of int4 codes (two of int8)
// per row, the chunk of x loaded once for the CPG rows. A chunk lies in one group (groups are
// multiples of 32), so it needs one scale. NORM: each 32-lane group covers the whole x row, so
// it also sums its squares. GLU (CPG 2 or 4): rows in pairs j, p.n + j, giving column j of y.
override CPG: u32 = 4u;
#include gemv_common
#ifdef NORM

fn g_vec(k: u32) -> vec4<f32> {
#ifdef VEC
    return g4[k >> 2u];
#else
    if (k < p.k) {
        return g4[k >> 2u];
    }
    return vec4<f32>(0.0);
#endif
}
#endif

struct X32 {
    a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
    a4: vec4<f32>, a5: vec4<f32>, a6: vec4<f32>, a7: vec4<f32>,
    sum: f32,
}

#ifndef VEC
fn x_at(xrow: u32, k: u32) -> f32 {
    if (k < p.k) {
        return f32(x[xrow + k]);
    }
    return 0.0;
}
fn x_vec(xrow: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(x_at(xrow, k), x_at(xrow, k + 1u), x_at(xrow, k + 2u), x_at(xrow, k + 3u));
}
#endif

// x[xrow + k .. xrow + k + 32], zero past K.
fn load_x(xrow: u32, k: u32) -> X32 {
    var r: X32;
#ifdef VEC
    let i = (xrow + k) >> 2u;
    r.a0 = vec4<f32>(x4[i]); r.a1 = vec4<f32>(x4[i + 1u]); r.a2 = vec4<f32>(x4[i + 2u]); r.a3 = vec4<f32>(x4[i + 3u]);
    r.a4 = vec4<f32>(x4[i + 4u]); r.a5 = vec4<f32>(x4[i + 5u]); r.a6 = vec4<f32>(x4[i + 6u]); r.a7 = vec4<f32>(x4[i + 7u]);
#else
    r.a0 = x_vec(xrow, k); r.a1 = x_vec(xrow, k + 4u); r.a2 = x_vec(xrow, k + 8u); r.a3 = x_vec(xrow, k + 12u);
    r.a4 = x_vec(xrow, k + 16u); r.a5 = x_vec(xrow, k + 20u); r.a6 = x_vec(xrow, k + 24u); r.a7 = x_vec(xrow, k + 28u);
#endif
#ifdef NORM
    sumsq += dot(r.a0, r.a0) + dot(r.a1, r.a1) + dot(r.a2, r.a2) + dot(r.a3, r.a3) +
        dot(r.a4, r.a4) + dot(r.a5, r.a5) + dot(r.a6, r.a6) + dot(r.a7, r.a7);
    r.a0 *= g_vec(k); r.a1 *= g_vec(k + 4u); r.a2 *= g_vec(k + 8u); r.a3 *= g_vec(k + 12u);
    r.a4 *= g_vec(k + 16u); r.a5 *= g_vec(k + 20u); r.a6 *= g_vec(k + 24u); r.a7 *= g_vec(k + 28u);
#endif
#ifdef ZERO
    // For the offsets' term: m * sum(x) over the chunk.
    r.sum = dot(r.a0 + r.a1 + r.a2 + r.a3 + r.a4 + r.a5 + r.a6 + r.a7, vec4<f32>(1.0));
#endif
#ifdef Q4
    // Int4 codes are decoded in place (nib_placed): x carries the 16^-i.
    r.a0 *= UNPLACE; r.a1 *= UNPLACE; r.a2 *= UNPLACE; r.a3 *= UNPLACE;
    r.a4 *= UNPLACE; r.a5 *= UNPLACE; r.a6 *= UNPLACE; r.a7 *= UNPLACE;
#endif
    return r;
}

#ifdef Q4
// Codes 0..3 of w left in place, (q_i - OFF) * 16^i: one mask-or and one subtraction each, no
// shifts (qdecode's trick; bits 0..15 stay inside the mantissa). Exact, and so is the product
// with x * 16^-i: powers of two, so the sums match nib_lo's bit for bit.
const PLACE = vec4<f32>(1.0, 16.0, 256.0, 4096.0);
const UNPLACE = vec4<f32>(1.0, 0.0625, 0.00390625, 0.000244140625);
const NIB_SUB = vec4<f32>(MAGIC_F) + OFF * PLACE;
fn nib_placed(w: u32) -> vec4<f32> {
    let q = vec4<u32>(w) & vec4<u32>(0xFu, 0xF0u, 0xF00u, 0xF000u);
    return bitcast<vec4<f32>>(q | vec4<u32>(MAGIC)) - NIB_SUB;
}
#endif

// One row's codes for chunk c (int8: two vec4s) and its (d, m), as loaded: decoded only where
// used, so the loads can fly while the previous chunk is summed.
struct WChunk {
    q0: vec4<u32>,
#ifndef Q4
    q1: vec4<u32>,
#endif
    sc: vec2<f32>,
}

fn load_w(n: u32, c: u32) -> WChunk {
    var w: WChunk;
    w.sc = scale_of(n, (c * 32u) / p.group);
    let row = n * (p.row_words >> 2u);
#ifdef Q4
    w.q0 = codes[row + c];
#else
    w.q0 = codes[row + 2u * c];
    w.q1 = codes[row + 2u * c + 1u];
#endif
    return w;
}

// x's chunk · deq(W) over the chunk.
fn dot_w(xc: X32, w: WChunk) -> f32 {
    let q = w.q0;
#ifdef Q4
    let s = dot(xc.a0, nib_placed(q.x)) + dot(xc.a1, nib_placed(q.x >> 16u)) + dot(xc.a2, nib_placed(q.y)) + dot(xc.a3, nib_placed(q.y >> 16u)) +
        dot(xc.a4, nib_placed(q.z)) + dot(xc.a5, nib_placed(q.z >> 16u)) + dot(xc.a6, nib_placed(q.w)) + dot(xc.a7, nib_placed(q.w >> 16u));
#else
    let q1 = w.q1;
    let s = dot(xc.a0, bytes4(q.x)) + dot(xc.a1, bytes4(q.y)) + dot(xc.a2, bytes4(q.z)) + dot(xc.a3, bytes4(q.w)) +
        dot(xc.a4, bytes4(q1.x)) + dot(xc.a5, bytes4(q1.y)) + dot(xc.a6, bytes4(q1.z)) + dot(xc.a7, bytes4(q1.w));
#endif
#ifdef ZERO
    return w.sc.x * s + w.sc.y * xc.sum;
#else
    return w.sc.x * s;
#endif
}

// The group's CPG rows' chunks.
struct W4 {
    r0: WChunk,
    r1: WChunk,
    r2: WChunk,
    r3: WChunk,
}

fn load_w4(n: vec4<u32>, c: u32) -> W4 {
    var w: W4;
    w.r0 = load_w(n.x, c);
    if (CPG > 1u) { w.r1 = load_w(n.y, c); }
    if (CPG > 2u) { w.r2 = load_w(n.z, c); w.r3 = load_w(n.w, c); }
    return w;
}

@compute @workgroup_size(256)
fn qgemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let at = gemv_at(wid, nwg, lid);
    let chunks = (p.k + 31u) / 32u;
    // Software-pipelined: each step requests the next chunk's weights before it sums this one's.
    var c = at.lane;
    var w = load_w4(at.n, min(c, chunks - 1u));
    var s = vec4<f32>(0.0);
    for (; c < chunks; c += 32u) {
        let next = load_w4(at.n, min(c + 32u, chunks - 1u));
        let xc = load_x(at.xrow, c * 32u);
        var d = vec4<f32>(dot_w(xc, w.r0), 0.0, 0.0, 0.0);
        if (CPG > 1u) { d.y = dot_w(xc, w.r1); }
        if (CPG > 2u) { d.z = dot_w(xc, w.r2); d.w = dot_w(xc, w.r3); }
        s += d;
        w = next;
    }
    gemv_reduce(at.m, lid, at.block, s);
}

#ifndef VEC
// ---- qgemm: 256 invocations, 128x128 output tile, 8x8 per invocation (as matmul.wgsl) ----
// Each invocation stages 8 consecutive k of one row of x and one row of W per BK step; the W
// row's 8 codes are one int4 word (two int8 words) with one scale.
const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 16u;
var<workgroup> As: array<array<vec4<f32>, 32>, BK>;
var<workgroup> Bs: array<array<vec4<f32>, 32>, BK>;

fn word(i: u32) -> u32 {
    return codes[i >> 2u][i & 3u];
}

struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// deq(W)[n, k .. k + 8] for k a multiple of 8 (inside the padded row).
fn w8(n: u32, k: u32) -> W8 {
    let sc = scale_of(n, k / p.group);
#ifdef Q4
    let w = word(n * p.row_words + (k >> 3u));
    return W8(fma(vec4<f32>(sc.x), nib_lo_minus(w, OFF), vec4<f32>(sc.y)), fma(vec4<f32>(sc.x), nib_hi_minus(w, OFF), vec4<f32>(sc.y)));
#else
    let i = n * p.row_words + (k >> 2u);
    return W8(sc.x * bytes4(word(i)), sc.x * bytes4(word(i + 1u)));
#endif
}

@compute @workgroup_size(256)
fn qgemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let tx = lid % 16u;
    let ty = lid / 16u;
    let lr = lid >> 1u;
    let lk = (lid & 1u) * 8u;
    let am = m0 + lr;
    let bn = n0 + lr;
    let col = lr >> 2u;
    let lane = lr & 3u;
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
            As[lk + i][col][lane] = av;
        }
        // Columns past K hold finite values; x is zero there.
        var wv = W8(vec4<f32>(0.0), vec4<f32>(0.0));
        if (bn < p.n && k0 + lk < p.k) {
            wv = w8(bn, k0 + lk);
        }
        Bs[lk][col][lane] = wv.lo.x; Bs[lk + 1u][col][lane] = wv.lo.y;
        Bs[lk + 2u][col][lane] = wv.lo.z; Bs[lk + 3u][col][lane] = wv.lo.w;
        Bs[lk + 4u][col][lane] = wv.hi.x; Bs[lk + 5u][col][lane] = wv.hi.y;
        Bs[lk + 6u][col][lane] = wv.hi.z; Bs[lk + 7u][col][lane] = wv.hi.w;
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
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
