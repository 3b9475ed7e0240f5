// The staged tensor-core GEMMs' entry body (matmul_coop_staged.wgsl, qmatmul_coop.wgsl), given
// `wid`, `t` (local index), `sid` and `lane`, and the kernel's `load_step` / `put_step` (one
// thread's share of a k step's tiles: load into registers, store into a stage). Two stages in
// workgroup memory: the next step's loads are issued before this step's multiplies and stored
// after them, so one barrier per step suffices. PIPE2: loads two steps ahead instead of one, so
// each step's loads have a whole step (multiplies, stores, barrier) to land before they are
// staged; the loop takes steps in pairs (an odd count gets a step of zeros).
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
