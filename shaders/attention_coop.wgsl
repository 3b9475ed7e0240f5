// Attention on cooperative matrices (tensor cores), for many query rows at once: the vision
// tower (bidirectional) and the prefill (causal over the KV cache). One 32-wide subgroup per
// workgroup, 16 query rows of one head. Cooperative matrices cannot be rescaled element-wise,
// so the online softmax's running correction of the output is impossible; instead two passes
// over the keys: the first computes each row's max and sum of exponentials from S = Q K^T, the
// second recomputes S, forms the final probabilities P = exp(S - max) / sum in f16, and
// accumulates O = P V on the tensor cores. Q K^T costs twice; S and P pass through workgroup
// memory (the scalar softmax needs their elements).
// Q, K and V fragments load straight from memory: the last 16-row block and the last 32-key
// tile are shifted back to end at the last row / key (the host guarantees >= 16 rows and >= 32
// loadable keys), so no load leaves the views; a shifted tile's keys seen before are masked
// and a shifted block's rows are written twice with equal values.
// Views as `attention_rel`'s (elements, multiples of 8 where loaded as matrices); `seqv` =
// [position of query row 0, valid keys]. Flags: HD64 / HD128 (head dim), CAUSAL.
enable f16;
enable wgpu_cooperative_matrix;

#ifdef HD128
const D: u32 = 128u;
#else
const D: u32 = 64u;
#endif
// Keys per tile; row pitch (f32) of the score tile and (f16) of the probability tile, multiples
// of 16 bytes as cooperative stores want, padded against bank conflicts.
const KT: u32 = 32u;
const SP: u32 = 36u;
const PP: u32 = 40u;
const NEG: f32 = -3.4028234e38;

struct AttnCoopParams {
    heads: u32,
    kv_heads: u32,
    rows: u32,
    // Key rows that may be loaded (a cache's capacity); at least KT.
    kcap: u32,
    q_off: u32,
    q_stride: u32,
    k_off: u32,
    k_stride: u32,
    v_off: u32,
    v_stride: u32,
    o_off: u32,
    o_stride: u32,
    scale: f32,
    causal: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: AttnCoopParams;
@group(0) @binding(1) var<storage, read> q: array<f16>;
@group(0) @binding(2) var<storage, read> k: array<f16>;
@group(0) @binding(3) var<storage, read> v: array<f16>;
@group(0) @binding(4) var<storage, read> seqv: array<u32>;
@group(0) @binding(5) var<storage, read_write> o: array<f16>;

var<workgroup> sc: array<f32, 576>; // 16 x SP
var<workgroup> ps: array<f16, 640>; // 16 x PP

// This lane's 16 scores of the tile in `sc` (row r, keys 2c + h), scaled, NEG where masked:
// keys before `seen` (a shifted tile's repeats), at or past `kend`, or (causal) past the row.
fn lane_scores(r: u32, h: u32, base: u32, seen: u32, kend: u32, qpos: u32) -> array<f32, 16> {
    var s: array<f32, 16>;
    for (var c = 0u; c < 16u; c++) {
        let j = 2u * c + h;
        let key = base + j;
        let ok = key >= seen && key < kend && (p.causal == 0u || key <= qpos);
        s[c] = select(NEG, p.scale * sc[r * SP + j], ok);
    }
    return s;
}

@compute @workgroup_size(32)
fn attn_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let hd = wid.y;
    let kvh = hd / (p.heads / p.kv_heads);
    let r0 = min(wid.x * 16u, p.rows - 16u);
    let pos0 = seqv[0];
    // Keys this block needs: all valid ones, or (causal) up to its last row's position.
    var kend = seqv[1];
    if (p.causal != 0u) {
        kend = min(kend, pos0 + r0 + 16u);
    }
    // Lane (r, h): row r of the block, keys 2c + h of each tile.
    let r = lane % 16u;
    let h = lane / 16u;
    let qpos = pos0 + r0 + r;
    let qb = p.q_off + r0 * p.q_stride + hd * D;
    let kb = p.k_off + kvh * D;
    let vb = p.v_off + kvh * D;
    let q0 = coopLoadT<coop_mat16x16<f16, A>>(&q[qb], p.q_stride);
    let q1 = coopLoadT<coop_mat16x16<f16, A>>(&q[qb + 16u], p.q_stride);
    let q2 = coopLoadT<coop_mat16x16<f16, A>>(&q[qb + 32u], p.q_stride);
    let q3 = coopLoadT<coop_mat16x16<f16, A>>(&q[qb + 48u], p.q_stride);
#ifdef HD128
    let q4 = coopLoadT<coop_mat16x16<f16, A>>(&q[qb + 64u], p.q_stride);
    let q5 = coopLoadT<coop_mat16x16<f16, A>>(&q[qb + 80u], p.q_stride);
    let q6 = coopLoadT<coop_mat16x16<f16, A>>(&q[qb + 96u], p.q_stride);
    let q7 = coopLoadT<coop_mat16x16<f16, A>>(&q[qb + 112u], p.q_stride);
#endif
    let tiles = (kend + KT - 1u) / KT;
    // Round 0: per lane, running max and sum over its keys, then merged with the row's other
    // lane (r + 16). Two loops rather than one over rounds: naga counts a branch on a local
    // variable as non-uniform, and cooperative operations need uniform control flow.
    var m = NEG;
    var l = 0.0;
    for (var t = 0u; t < tiles; t++) {
        let base = min(t * KT, p.kcap - KT);
#ifdef HD128
        score_tile(q0, q1, q2, q3, q4, q5, q6, q7, kb + base * p.k_stride);
#else
        score_tile(q0, q1, q2, q3, kb + base * p.k_stride);
#endif
        workgroupBarrier();
        let s = lane_scores(r, h, base, t * KT, kend, qpos);
        var tmax = NEG;
        for (var c = 0u; c < 16u; c++) {
            tmax = max(tmax, s[c]);
        }
        let m_new = max(m, tmax);
        var add = 0.0;
        for (var c = 0u; c < 16u; c++) {
            add += select(0.0, exp(s[c] - m_new), s[c] > NEG);
        }
        // While nothing is seen m_new is NEG and l is 0: exp(0) * 0 keeps it 0.
        l = l * exp(m - m_new) + add;
        m = m_new;
        workgroupBarrier();
    }
    let m2 = subgroupShuffleXor(m, 16u);
    let l2 = subgroupShuffleXor(l, 16u);
    let mm = max(m, m2);
    let inv = 1.0 / (l * exp(m - mm) + l2 * exp(m2 - mm));
    // Round 1: the final probabilities, and O = P V.
    var o0: coop_mat16x16<f32, C>;
    var o1: coop_mat16x16<f32, C>;
    var o2: coop_mat16x16<f32, C>;
    var o3: coop_mat16x16<f32, C>;
#ifdef HD128
    var o4: coop_mat16x16<f32, C>;
    var o5: coop_mat16x16<f32, C>;
    var o6: coop_mat16x16<f32, C>;
    var o7: coop_mat16x16<f32, C>;
#endif
    for (var t = 0u; t < tiles; t++) {
        let base = min(t * KT, p.kcap - KT);
#ifdef HD128
        score_tile(q0, q1, q2, q3, q4, q5, q6, q7, kb + base * p.k_stride);
#else
        score_tile(q0, q1, q2, q3, kb + base * p.k_stride);
#endif
        workgroupBarrier();
        let s = lane_scores(r, h, base, t * KT, kend, qpos);
        for (var c = 0u; c < 16u; c++) {
            ps[r * PP + 2u * c + h] = f16(select(0.0, exp(s[c] - mm) * inv, s[c] > NEG));
        }
        workgroupBarrier();
        let pa = coopLoadT<coop_mat16x16<f16, A>>(&ps[0], PP);
        let pb = coopLoadT<coop_mat16x16<f16, A>>(&ps[16], PP);
        // V rows are the B operand's rows.
        let v0 = vb + base * p.v_stride;
        let v1 = v0 + 16u * p.v_stride;
        o0 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0], p.v_stride), o0);
        o0 = coopMultiplyAdd(pb, coopLoadT<coop_mat16x16<f16, B>>(&v[v1], p.v_stride), o0);
        o1 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 16u], p.v_stride), o1);
        o1 = coopMultiplyAdd(pb, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 16u], p.v_stride), o1);
        o2 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 32u], p.v_stride), o2);
        o2 = coopMultiplyAdd(pb, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 32u], p.v_stride), o2);
        o3 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 48u], p.v_stride), o3);
        o3 = coopMultiplyAdd(pb, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 48u], p.v_stride), o3);
#ifdef HD128
        o4 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 64u], p.v_stride), o4);
        o4 = coopMultiplyAdd(pb, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 64u], p.v_stride), o4);
        o5 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 80u], p.v_stride), o5);
        o5 = coopMultiplyAdd(pb, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 80u], p.v_stride), o5);
        o6 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 96u], p.v_stride), o6);
        o6 = coopMultiplyAdd(pb, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 96u], p.v_stride), o6);
        o7 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 112u], p.v_stride), o7);
        o7 = coopMultiplyAdd(pb, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 112u], p.v_stride), o7);
#endif
        workgroupBarrier();
    }
    emit(o0, lane, r0, hd * D);
    emit(o1, lane, r0, hd * D + 16u);
    emit(o2, lane, r0, hd * D + 32u);
    emit(o3, lane, r0, hd * D + 48u);
#ifdef HD128
    emit(o4, lane, r0, hd * D + 64u);
    emit(o5, lane, r0, hd * D + 80u);
    emit(o6, lane, r0, hd * D + 96u);
    emit(o7, lane, r0, hd * D + 112u);
#endif
}

// S = Q K^T for the 32 keys whose rows start at element `k0` (K rows are the B operand's
// columns), stored into `sc` row-major.
#ifdef HD128
fn score_tile(q0: coop_mat16x16<f16, A>, q1: coop_mat16x16<f16, A>, q2: coop_mat16x16<f16, A>, q3: coop_mat16x16<f16, A>,
    q4: coop_mat16x16<f16, A>, q5: coop_mat16x16<f16, A>, q6: coop_mat16x16<f16, A>, q7: coop_mat16x16<f16, A>, k0: u32) {
#else
fn score_tile(q0: coop_mat16x16<f16, A>, q1: coop_mat16x16<f16, A>, q2: coop_mat16x16<f16, A>, q3: coop_mat16x16<f16, A>, k0: u32) {
#endif
    var s0: coop_mat16x16<f32, C>;
    var s1: coop_mat16x16<f32, C>;
    let k1 = k0 + 16u * p.k_stride;
    s0 = coopMultiplyAdd(q0, coopLoad<coop_mat16x16<f16, B>>(&k[k0], p.k_stride), s0);
    s1 = coopMultiplyAdd(q0, coopLoad<coop_mat16x16<f16, B>>(&k[k1], p.k_stride), s1);
    s0 = coopMultiplyAdd(q1, coopLoad<coop_mat16x16<f16, B>>(&k[k0 + 16u], p.k_stride), s0);
    s1 = coopMultiplyAdd(q1, coopLoad<coop_mat16x16<f16, B>>(&k[k1 + 16u], p.k_stride), s1);
    s0 = coopMultiplyAdd(q2, coopLoad<coop_mat16x16<f16, B>>(&k[k0 + 32u], p.k_stride), s0);
    s1 = coopMultiplyAdd(q2, coopLoad<coop_mat16x16<f16, B>>(&k[k1 + 32u], p.k_stride), s1);
    s0 = coopMultiplyAdd(q3, coopLoad<coop_mat16x16<f16, B>>(&k[k0 + 48u], p.k_stride), s0);
    s1 = coopMultiplyAdd(q3, coopLoad<coop_mat16x16<f16, B>>(&k[k1 + 48u], p.k_stride), s1);
#ifdef HD128
    s0 = coopMultiplyAdd(q4, coopLoad<coop_mat16x16<f16, B>>(&k[k0 + 64u], p.k_stride), s0);
    s1 = coopMultiplyAdd(q4, coopLoad<coop_mat16x16<f16, B>>(&k[k1 + 64u], p.k_stride), s1);
    s0 = coopMultiplyAdd(q5, coopLoad<coop_mat16x16<f16, B>>(&k[k0 + 80u], p.k_stride), s0);
    s1 = coopMultiplyAdd(q5, coopLoad<coop_mat16x16<f16, B>>(&k[k1 + 80u], p.k_stride), s1);
    s0 = coopMultiplyAdd(q6, coopLoad<coop_mat16x16<f16, B>>(&k[k0 + 96u], p.k_stride), s0);
    s1 = coopMultiplyAdd(q6, coopLoad<coop_mat16x16<f16, B>>(&k[k1 + 96u], p.k_stride), s1);
    s0 = coopMultiplyAdd(q7, coopLoad<coop_mat16x16<f16, B>>(&k[k0 + 112u], p.k_stride), s0);
    s1 = coopMultiplyAdd(q7, coopLoad<coop_mat16x16<f16, B>>(&k[k1 + 112u], p.k_stride), s1);
#endif
    coopStoreT(s0, &sc[0], SP);
    coopStoreT(s1, &sc[16], SP);
}

// Writes a 16x16 block of the output (rows r0.., columns col..) through `sc`, as f16.
fn emit(c: coop_mat16x16<f32, C>, lane: u32, r0: u32, col: u32) {
    coopStoreT(c, &sc[0], SP);
    workgroupBarrier();
    for (var e = lane; e < 256u; e += 32u) {
        let row = e / 16u;
        o[p.o_off + (r0 + row) * p.o_stride + col + e % 16u] = f16(sc[row * SP + e % 16u]);
    }
    workgroupBarrier();
}
