// y[m, n_off + n] = epilogue(sum_k x[m, k] * deq(W)[n, k] + bias[bias_off + n]) on cooperative
// matrices, W packed (src/quant) and dequantised while staged: the f16 kernel of
// matmul_coop_staged.wgsl with its W tile filled from codes. Each 32-deep k step, thread t
// (< 128) reads row t's 32 codes (one 16-byte load for int4, two for int8) and their scale,
// and writes the 32 dequantised values as f16 into workgroup memory; the codes of the next step
// are loaded before this step's multiplies. A 32-column chunk lies in one group (groups are
// multiples of 32). k past K reads zeros from x, so the padded codes multiply nothing. BN64
// (64-wide tiles): threads t and t + 64 load the same row and stage half of it each.
// Flags as qmatmul.wgsl: Q4 (else int8), ZERO (int4 with offsets). f16 x (16-byte aligned rows).
// PIPE2 as matmul_coop_staged.wgsl: loads two steps ahead.
enable wgpu_cooperative_matrix;

alias T = f16;

#include qmatmul_params

@group(0) @binding(0) var<uniform> p: QMatmulParams;
@group(0) @binding(1) var<storage, read> x8: array<H8>;
@group(0) @binding(2) var<storage, read> codes: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> scales: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f16>;

#include gelu
#include epilogue
#include qdecode

#ifdef ZERO
const OFF: f32 = 0.0;
#else
const OFF: f32 = 8.0;
#endif

#include coop_stage

// One row's codes for a 32-deep step (int8: two words of 16 bytes) and its (d, m).
struct RowCodes {
    a: vec4<u32>,
    b: vec4<u32>,
    sc: vec2<f32>,
}

fn load_b(n0: u32, k0: u32, t: u32) -> RowCodes {
    let n = min(n0 + t, p.n - 1u);
    let c = k0 / 32u;
    var r: RowCodes;
    // A step past K (PIPE2's padding) stages zeros.
    if (k0 >= p.k) {
        return r;
    }
    let gi = n * p.row_groups + (k0 / p.group);
#ifdef ZERO
    r.sc = scale_pair(gi);
#else
    r.sc = vec2<f32>(scale_half(gi), 0.0);
#endif
    let row = n * (p.row_words >> 2u);
#ifdef Q4
    r.a = codes[row + c];
#else
    r.a = codes[row + 2u * c];
    r.b = codes[row + 2u * c + 1u];
#endif
    return r;
}

fn put4(at: u32, v: vec4<f32>) {
    Bs[at / 4u] = vec4<f16>(v);
}

fn put_b(stage: u32, t: u32, r: RowCodes) {
    let at = stage * (BN * S) + t * S;
    let d = r.sc.x;
    let m = vec4<f32>(r.sc.y);
#ifdef Q4
    put4(at, fma(vec4<f32>(d), nib_lo_minus(r.a.x, OFF), m));
    put4(at + 4u, fma(vec4<f32>(d), nib_hi_minus(r.a.x, OFF), m));
    put4(at + 8u, fma(vec4<f32>(d), nib_lo_minus(r.a.y, OFF), m));
    put4(at + 12u, fma(vec4<f32>(d), nib_hi_minus(r.a.y, OFF), m));
    put4(at + 16u, fma(vec4<f32>(d), nib_lo_minus(r.a.z, OFF), m));
    put4(at + 20u, fma(vec4<f32>(d), nib_hi_minus(r.a.z, OFF), m));
    put4(at + 24u, fma(vec4<f32>(d), nib_lo_minus(r.a.w, OFF), m));
    put4(at + 28u, fma(vec4<f32>(d), nib_hi_minus(r.a.w, OFF), m));
#else
    put4(at, d * bytes4(r.a.x));
    put4(at + 4u, d * bytes4(r.a.y));
    put4(at + 8u, d * bytes4(r.a.z));
    put4(at + 12u, d * bytes4(r.a.w));
    put4(at + 16u, d * bytes4(r.b.x));
    put4(at + 20u, d * bytes4(r.b.y));
    put4(at + 24u, d * bytes4(r.b.z));
    put4(at + 28u, d * bytes4(r.b.w));
#endif
}

#ifdef BN64
// BN64: threads t and t + 64 load row t's codes; each dequantises and stages half of them.
fn put_b_half(stage: u32, t: u32, r: RowCodes) {
    let h = t / BN;
    let at = stage * (BN * S) + (t % BN) * S + 16u * h;
    let d = r.sc.x;
    let m = vec4<f32>(r.sc.y);
#ifdef Q4
    let w0 = select(r.a.x, r.a.z, h == 1u);
    let w1 = select(r.a.y, r.a.w, h == 1u);
    put4(at, fma(vec4<f32>(d), nib_lo_minus(w0, OFF), m));
    put4(at + 4u, fma(vec4<f32>(d), nib_hi_minus(w0, OFF), m));
    put4(at + 8u, fma(vec4<f32>(d), nib_lo_minus(w1, OFF), m));
    put4(at + 12u, fma(vec4<f32>(d), nib_hi_minus(w1, OFF), m));
#else
    let q = select(r.a, r.b, h == 1u);
    put4(at, d * bytes4(q.x));
    put4(at + 4u, d * bytes4(q.y));
    put4(at + 8u, d * bytes4(q.z));
    put4(at + 12u, d * bytes4(q.w));
#endif
}
#endif

// Thread t's share of one k step: x pieces t and t + 128, and row t % BN's codes.
struct Pieces {
    a0: H8,
    a1: H8,
    b: RowCodes,
}

fn load_step(m0: u32, n0: u32, k0: u32, t: u32) -> Pieces {
    return Pieces(load_a(m0, k0, t), load_a(m0, k0, t + 128u), load_b(n0, k0, t % BN));
}

fn put_step(stage: u32, t: u32, r: Pieces) {
    put_a(stage, t, r.a0);
    put_a(stage, t + 128u, r.a1);
#ifdef BN64
    put_b_half(stage, t, r.b);
#else
    put_b(stage, t, r.b);
#endif
}

@compute @workgroup_size(128)
fn qgemm_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32, @builtin(subgroup_id) sid: u32, @builtin(subgroup_invocation_id) lane: u32) {
#include coop_main
}
