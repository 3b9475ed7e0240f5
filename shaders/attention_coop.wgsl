// Attention on cooperative matrices (tensor cores), for many query rows at once: the vision
// tower (bidirectional) and the prefill (causal over the KV cache). A workgroup takes 16 query
// rows of one head; its 4 subgroups take every 4th tile of 32 keys, so each row's keys are
// covered by 4 independent chains. Cooperative matrices cannot be rescaled element-wise, so the
// online softmax's running correction of the output is impossible; instead two rounds over
// the keys: the first computes each row's max and sum of exponentials from S = Q K^T (merged
// across the subgroups through workgroup memory), the second recomputes S, forms the final
// probabilities P = exp(S - max) / sum in f16 and accumulates O = P V on the tensor cores;
// the subgroups' O are then summed (no rescaling: they share the row statistics). Q K^T costs
// twice; S and P pass through workgroup memory (the scalar softmax needs their elements).
// Q, K and V fragments load straight from memory: the last 16-row block and the last 32-key
// tile are shifted back to end at the last row / key (the host guarantees >= 16 rows and >= 32
// loadable keys), so no load leaves the views; a shifted tile's keys seen before are masked
// and a shifted block's rows are written twice with equal values.
// Views as `attention_rel`'s (elements, multiples of 8 where loaded as matrices); `seqv` =
// [position of query row 0, valid keys]. Flags: HD64 / HD128 (head dim).
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
// Subgroups per workgroup.
const NW: u32 = 4u;

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

// Per subgroup: its score tile (16 x SP), its probability tile (16 x PP), its lanes' (max, sum).
var<workgroup> sc: array<f32, 2304>;
var<workgroup> ps: array<f16, 2560>;
var<workgroup> stat: array<vec2<f32>, 128>;

// This lane's 16 scores of the tile at `sc[sb]` (row r, keys 2c + h), scaled, NEG where masked:
// keys before `seen` (a shifted tile's repeats), at or past `kend`, or (causal) past the row.
fn lane_scores(sb: u32, r: u32, h: u32, base: u32, seen: u32, kend: u32, qpos: u32) -> array<f32, 16> {
    var s: array<f32, 16>;
    for (var c = 0u; c < 16u; c++) {
        let j = 2u * c + h;
        let key = base + j;
        let ok = key >= seen && key < kend && (p.causal == 0u || key <= qpos);
        s[c] = select(NEG, p.scale * sc[sb + r * SP + j], ok);
    }
    return s;
}

@compute @workgroup_size(128)
fn attn_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_id) w: u32, @builtin(subgroup_invocation_id) lane: u32,
    @builtin(local_invocation_index) tid: u32) {
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
    // Every subgroup runs the same number of steps (the barriers need it): step i takes tile
    // i * NW + w, past the last tile a clamped one whose keys are all masked (seen >= kend).
    let steps = (tiles + NW - 1u) / NW;
    let sb = w * 16u * SP;
    let pb = w * 16u * PP;
    // Round 0: per lane, running max and sum over its keys. Two loops rather than one over
    // rounds: naga counts a branch on a local variable as non-uniform, and cooperative
    // operations need uniform control flow.
    var m = NEG;
    var l = 0.0;
    for (var i = 0u; i < steps; i++) {
        let t = i * NW + w;
        let base = min(t * KT, p.kcap - KT);
#ifdef HD128
        score_tile(q0, q1, q2, q3, q4, q5, q6, q7, kb + base * p.k_stride, sb);
#else
        score_tile(q0, q1, q2, q3, kb + base * p.k_stride, sb);
#endif
        workgroupBarrier();
        let s = lane_scores(sb, r, h, base, t * KT, kend, qpos);
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
    // The row's statistics over all its keys: lanes r and r + 16 of every subgroup.
    stat[w * 32u + lane] = vec2<f32>(m, l);
    workgroupBarrier();
    var mm = NEG;
    for (var j = 0u; j < 2u * NW; j++) {
        mm = max(mm, stat[j * 16u + r].x);
    }
    var total = 0.0;
    for (var j = 0u; j < 2u * NW; j++) {
        let e = stat[j * 16u + r];
        total += select(0.0, e.y * exp(e.x - mm), e.x > NEG);
    }
    let inv = 1.0 / total;
    // Round 1: the final probabilities, and this subgroup's share of O = P V.
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
    for (var i = 0u; i < steps; i++) {
        let t = i * NW + w;
        let base = min(t * KT, p.kcap - KT);
#ifdef HD128
        score_tile(q0, q1, q2, q3, q4, q5, q6, q7, kb + base * p.k_stride, sb);
#else
        score_tile(q0, q1, q2, q3, kb + base * p.k_stride, sb);
#endif
        workgroupBarrier();
        let s = lane_scores(sb, r, h, base, t * KT, kend, qpos);
        for (var c = 0u; c < 16u; c++) {
            ps[pb + r * PP + 2u * c + h] = f16(select(0.0, exp(s[c] - mm) * inv, s[c] > NEG));
        }
        workgroupBarrier();
        let pa = coopLoadT<coop_mat16x16<f16, A>>(&ps[pb], PP);
        let pz = coopLoadT<coop_mat16x16<f16, A>>(&ps[pb + 16u], PP);
        // V rows are the B operand's rows.
        let v0 = vb + base * p.v_stride;
        let v1 = v0 + 16u * p.v_stride;
        o0 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0], p.v_stride), o0);
        o0 = coopMultiplyAdd(pz, coopLoadT<coop_mat16x16<f16, B>>(&v[v1], p.v_stride), o0);
        o1 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 16u], p.v_stride), o1);
        o1 = coopMultiplyAdd(pz, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 16u], p.v_stride), o1);
        o2 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 32u], p.v_stride), o2);
        o2 = coopMultiplyAdd(pz, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 32u], p.v_stride), o2);
        o3 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 48u], p.v_stride), o3);
        o3 = coopMultiplyAdd(pz, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 48u], p.v_stride), o3);
#ifdef HD128
        o4 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 64u], p.v_stride), o4);
        o4 = coopMultiplyAdd(pz, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 64u], p.v_stride), o4);
        o5 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 80u], p.v_stride), o5);
        o5 = coopMultiplyAdd(pz, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 80u], p.v_stride), o5);
        o6 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 96u], p.v_stride), o6);
        o6 = coopMultiplyAdd(pz, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 96u], p.v_stride), o6);
        o7 = coopMultiplyAdd(pa, coopLoadT<coop_mat16x16<f16, B>>(&v[v0 + 112u], p.v_stride), o7);
        o7 = coopMultiplyAdd(pz, coopLoadT<coop_mat16x16<f16, B>>(&v[v1 + 112u], p.v_stride), o7);
#endif
        workgroupBarrier();
    }
    emit(o0, sb, tid, r0, hd * D);
    emit(o1, sb, tid, r0, hd * D + 16u);
    emit(o2, sb, tid, r0, hd * D + 32u);
    emit(o3, sb, tid, r0, hd * D + 48u);
#ifdef HD128
    emit(o4, sb, tid, r0, hd * D + 64u);
    emit(o5, sb, tid, r0, hd * D + 80u);
    emit(o6, sb, tid, r0, hd * D + 96u);
    emit(o7, sb, tid, r0, hd * D + 112u);
#endif
}

// S = Q K^T for the 32 keys whose rows start at element `k0` (K rows are the B operand's
// columns), stored row-major at `sc[sb]`.
#ifdef HD128
fn score_tile(q0: coop_mat16x16<f16, A>, q1: coop_mat16x16<f16, A>, q2: coop_mat16x16<f16, A>, q3: coop_mat16x16<f16, A>,
    q4: coop_mat16x16<f16, A>, q5: coop_mat16x16<f16, A>, q6: coop_mat16x16<f16, A>, q7: coop_mat16x16<f16, A>, k0: u32, sb: u32) {
#else
fn score_tile(q0: coop_mat16x16<f16, A>, q1: coop_mat16x16<f16, A>, q2: coop_mat16x16<f16, A>, q3: coop_mat16x16<f16, A>, k0: u32, sb: u32) {
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
    coopStoreT(s0, &sc[sb], SP);
    coopStoreT(s1, &sc[sb + 16u], SP);
}

// Writes a 16x16 block of the output (rows r0.., columns col..) as f16: the sum of the
// subgroups' blocks, through their score tiles.
fn emit(c: coop_mat16x16<f32, C>, sb: u32, tid: u32, r0: u32, col: u32) {
    coopStoreT(c, &sc[sb], SP);
    workgroupBarrier();
    for (var e = tid; e < 256u; e += 32u * NW) {
        let at = (e / 16u) * SP + e % 16u;
        let sum = (sc[at] + sc[16u * SP + at]) + (sc[32u * SP + at] + sc[48u * SP + at]);
        o[p.o_off + (r0 + e / 16u) * p.o_stride + col + e % 16u] = f16(sum);
    }
    workgroupBarrier();
}
