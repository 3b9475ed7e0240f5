// y[m, n_off + n] = epilogue(sum_k x[m, k] * W[n, k] + bias[bias_off + n]) on cooperative
// matrices, with the operand tiles staged through workgroup memory: each 32-deep k step, the
// 128 threads copy a 64 x 32 tile of x and a 128 x 32 tile of W with 16-byte loads (coalesced:
// consecutive threads take consecutive 16-byte pieces of a row), and the 4 subgroups read their
// 16x16 operands from there. Two stages: the next step's loads are issued into registers before
// this step's multiplies and stored after them, so one barrier per step suffices. Rows past M
// or N repeat the last row (their results are not stored); k past K reads zeros.
// Same parameters and epilogue as matmul.wgsl; f16 x and W (16-byte aligned rows), f32 sums.
// Flags (coop_stage.wgsl): BN64 (64 x 64 tiles), BK64 (with BN64: 64-deep steps, each thread
// copying 4 pieces of each tile; 40 KiB of workgroup memory).
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
    var ra0 = load_a(m_base, 0u, t);
    var ra1 = load_a(m_base, 0u, t + 128u);
#ifdef BK64
    var ra2 = load_a(m_base, 0u, t + 256u);
    var ra3 = load_a(m_base, 0u, t + 384u);
    var rb2 = load_b(n_base, 0u, t + 256u);
    var rb3 = load_b(n_base, 0u, t + 384u);
#endif
    var rb0 = load_b(n_base, 0u, t);
    var rb1 = load_b(n_base, 0u, t + 128u);
#ifndef BN64
    var rb2 = load_b(n_base, 0u, t + 256u);
    var rb3 = load_b(n_base, 0u, t + 384u);
#endif
    put_a(0u, t, ra0);
    put_a(0u, t + 128u, ra1);
#ifdef BK64
    put_a(0u, t + 256u, ra2);
    put_a(0u, t + 384u, ra3);
    put_b(0u, t + 256u, rb2);
    put_b(0u, t + 384u, rb3);
#endif
    put_b(0u, t, rb0);
    put_b(0u, t + 128u, rb1);
#ifndef BN64
    put_b(0u, t + 256u, rb2);
    put_b(0u, t + 384u, rb3);
#endif
    workgroupBarrier();
    for (var s = 0u; s < steps; s++) {
        let cur = s % 2u;
        let more = s + 1u < steps;
        if (more) {
            let k1 = (s + 1u) * BK;
            ra0 = load_a(m_base, k1, t);
            ra1 = load_a(m_base, k1, t + 128u);
#ifdef BK64
            ra2 = load_a(m_base, k1, t + 256u);
            ra3 = load_a(m_base, k1, t + 384u);
            rb2 = load_b(n_base, k1, t + 256u);
            rb3 = load_b(n_base, k1, t + 384u);
#endif
            rb0 = load_b(n_base, k1, t);
            rb1 = load_b(n_base, k1, t + 128u);
#ifndef BN64
            rb2 = load_b(n_base, k1, t + 256u);
            rb3 = load_b(n_base, k1, t + 384u);
#endif
        }
        let ab = cur * (BM * S) + mr * S;
        let bb = cur * (BN * S) + nr * S;
        for (var kk = 0u; kk < BK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&As[(ab + kk) / SE], S / SE);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&As[(ab + 16u * S + kk) / SE], S / SE);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&Bs[(bb + kk) / SE], S / SE);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&Bs[(bb + 16u * S + kk) / SE], S / SE);
#ifdef BN64
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
#else
            let b2 = coopLoad<coop_mat16x16<f16, B>>(&Bs[(bb + 32u * S + kk) / SE], S / SE);
            let b3 = coopLoad<coop_mat16x16<f16, B>>(&Bs[(bb + 48u * S + kk) / SE], S / SE);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c02 = coopMultiplyAdd(a0, b2, c02);
            c03 = coopMultiplyAdd(a0, b3, c03);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c12 = coopMultiplyAdd(a1, b2, c12);
            c13 = coopMultiplyAdd(a1, b3, c13);
#endif
        }
        if (more) {
            let nxt = 1u - cur;
            put_a(nxt, t, ra0);
            put_a(nxt, t + 128u, ra1);
#ifdef BK64
            put_a(nxt, t + 256u, ra2);
            put_a(nxt, t + 384u, ra3);
            put_b(nxt, t + 256u, rb2);
            put_b(nxt, t + 384u, rb3);
#endif
            put_b(nxt, t, rb0);
            put_b(nxt, t + 128u, rb1);
#ifndef BN64
            put_b(nxt, t + 256u, rb2);
            put_b(nxt, t + 384u, rb3);
#endif
        }
        workgroupBarrier();
    }
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
