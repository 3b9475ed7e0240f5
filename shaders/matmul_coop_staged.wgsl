// y[m, n_off + n] = epilogue(sum_k x[m, k] * W[n, k] + bias[bias_off + n]) on cooperative
// matrices, with the operand tiles staged through workgroup memory: each 32-deep k step, the
// 128 threads copy a 64 x 32 tile of x and a 128 x 32 tile of W with 16-byte loads (coalesced:
// consecutive threads take consecutive 16-byte pieces of a row), and the 4 subgroups read their
// 16x16 operands from there. Two stages: the next step's loads are issued into registers before
// this step's multiplies and stored after them, so one barrier per step suffices. Rows past M
// or N repeat the last row (their results are not stored); k past K reads zeros.
// Same parameters and epilogue as matmul.wgsl; f16 x and W (16-byte aligned rows), f32 sums.
// Flags (coop_stage.wgsl): BN64 (64 x 64 tiles), BK64 (with BN64: 64-deep steps, each thread
// copying 4 pieces of each tile; 40 KiB of workgroup memory). PIPE2: loads two steps ahead
// instead of one, so each step's loads have a whole step (multiplies, stores, barrier) to land
// before they are staged; the loop takes steps in pairs (an odd count gets a step of zeros).
enable wgpu_cooperative_matrix;

alias T = f16;

#include matmul_params

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> x8: array<H8>;
@group(0) @binding(2) var<storage, read> w8: array<H8>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f16>;

#include gelu
#include epilogue

#include coop_stage

// The 16-byte piece `c` (row c / 4) of the W tile at (n0, k0); zero past K.
fn load_b(n0: u32, k0: u32, c: u32) -> H8 {
    let n = min(n0 + c / PR, p.n - 1u);
    let k = k0 + 8u * (c % PR);
    if (k >= p.k) { return H8_ZERO; }
    return w8[(n * p.k + k) / 8u];
}

fn put_b(stage: u32, c: u32, v: H8) {
    let at = (stage * (BN * S) + (c / PR) * S + 8u * (c % PR)) / 4u;
    Bs[at] = v.lo;
    Bs[at + 1u] = v.hi;
}

// Thread t's share of one k step's tiles: x pieces t + 128 i (2; BK64: 4) and W pieces
// t + 128 i (2 with BN64, else 4; BK64: 4). Unused fields stay zero and cost nothing.
struct Pieces {
    a0: H8, a1: H8, a2: H8, a3: H8,
    b0: H8, b1: H8, b2: H8, b3: H8,
}

fn load_step(m0: u32, n0: u32, k0: u32, t: u32) -> Pieces {
    var r = Pieces(H8_ZERO, H8_ZERO, H8_ZERO, H8_ZERO, H8_ZERO, H8_ZERO, H8_ZERO, H8_ZERO);
    r.a0 = load_a(m0, k0, t);
    r.a1 = load_a(m0, k0, t + 128u);
    r.b0 = load_b(n0, k0, t);
    r.b1 = load_b(n0, k0, t + 128u);
    if (BM * PR > 256u) {
        r.a2 = load_a(m0, k0, t + 256u);
        r.a3 = load_a(m0, k0, t + 384u);
    }
    if (BN * PR > 256u) {
        r.b2 = load_b(n0, k0, t + 256u);
        r.b3 = load_b(n0, k0, t + 384u);
    }
    return r;
}

fn put_step(stage: u32, t: u32, r: Pieces) {
    put_a(stage, t, r.a0);
    put_a(stage, t + 128u, r.a1);
    put_b(stage, t, r.b0);
    put_b(stage, t + 128u, r.b1);
    if (BM * PR > 256u) {
        put_a(stage, t + 256u, r.a2);
        put_a(stage, t + 384u, r.a3);
    }
    if (BN * PR > 256u) {
        put_b(stage, t + 256u, r.b2);
        put_b(stage, t + 384u, r.b3);
    }
}

@compute @workgroup_size(128)
fn gemm_coop_staged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32, @builtin(subgroup_id) sid: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let m_base = wid.y * BM;
    let n_base = wid.x * BN;
    // This subgroup's 2 x 4 tiles of 16x16 inside the workgroup's 64 x 128 (BN64: 2 x 2 of 64 x 64).
    let mr = (sid / 2u) * 32u;
    let nr = (sid % 2u) * (BN / 2u);
    var c00: coop_mat16x16<f32, C>;
    var c01: coop_mat16x16<f32, C>;
    var c02: coop_mat16x16<f32, C>;
    var c03: coop_mat16x16<f32, C>;
    var c10: coop_mat16x16<f32, C>;
    var c11: coop_mat16x16<f32, C>;
    var c12: coop_mat16x16<f32, C>;
    var c13: coop_mat16x16<f32, C>;
    let steps = (p.k + BK - 1u) / BK;
    var nx = load_step(m_base, n_base, 0u, t);
    put_step(0u, t, nx);
    workgroupBarrier();
#ifdef PIPE2
    // nx: the next step's pieces, loaded a step ago; nn: the one after, loaded now. Steps past
    // K load nothing (zeros).
    nx = load_step(m_base, n_base, BK, t);
    for (var s = 0u; s < steps; s += 2u) {
        let nn = load_step(m_base, n_base, (s + 2u) * BK, t);
        {
            let ab = mr * S;
            let bb = nr * S;
#include coop_mma
        }
        put_step(1u, t, nx);
        workgroupBarrier();
        nx = load_step(m_base, n_base, (s + 3u) * BK, t);
        {
            let ab = BM * S + mr * S;
            let bb = BN * S + nr * S;
#include coop_mma
        }
        put_step(0u, t, nn);
        workgroupBarrier();
    }
#else
    for (var s = 0u; s < steps; s++) {
        let cur = s % 2u;
        let more = s + 1u < steps;
        if (more) {
            nx = load_step(m_base, n_base, (s + 1u) * BK, t);
        }
        {
            let ab = cur * (BM * S) + mr * S;
            let bb = cur * (BN * S) + nr * S;
#include coop_mma
        }
        if (more) {
            put_step(1u - cur, t, nx);
        }
        workgroupBarrier();
    }
#endif
    let m0 = m_base + mr;
    let n0 = n_base + nr;
    emit(c00, sid, lane, m0, n0);
    emit(c01, sid, lane, m0, n0 + 16u);
#ifndef BN64
    emit(c02, sid, lane, m0, n0 + 32u);
    emit(c03, sid, lane, m0, n0 + 48u);
#endif
    emit(c10, sid, lane, m0 + 16u, n0);
    emit(c11, sid, lane, m0 + 16u, n0 + 16u);
#ifndef BN64
    emit(c12, sid, lane, m0 + 16u, n0 + 32u);
    emit(c13, sid, lane, m0 + 16u, n0 + 48u);
#endif
}
