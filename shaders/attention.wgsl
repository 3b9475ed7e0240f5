// Scaled dot-product attention, one workgroup per (query row, head, key split), with an online
// softmax over tiles of 64 keys: no score matrix is materialised, any length fits, and the 64
// threads share every load (thread t scores key t of a tile, then each thread accumulates one
// vec4 of the head dim over a share of the tile's keys).
// With one split the workgroup writes the output row; with several (decode: one query row,
// so the keys are split to fill the GPU) it writes (acc, max, sum) partials that
// `attn_combine` merges.
// Row views: q[q_off + i*q_stride + h*D + d], k/v (vec4 elements) likewise with their kv head
// (GQA: heads share kv heads in groups), o like q. `seq` = [position of query row 0, number
// of valid kv rows]; storage, so a recorded decode step can be replayed at a new position.
// Causal: query i sees keys j <= seq[0] + i. Flags: HD32 / HD64 / HD128 (head dim), F16, SPLIT.
//
// Flag RELPOS: SAM's windowed attention with decomposed relative-position bias instead (see
// `attention_rel` below; not combined with the flags above except HD32 / HD64 and F16).

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

#ifdef HD128
const D: u32 = 128u;
#else
#ifdef HD32
const D: u32 = 32u;
#else
const D: u32 = 64u;
#endif
#endif
const D4: u32 = D / 4u;
const TILE: u32 = 64u;
// Threads that share one vec4 column of the head dim, each over every KP-th key of a tile.
const KP: u32 = TILE / D4;
const NEG: f32 = -3.4028234e38;

#include attn_params

struct RelAttnParams {
    heads: u32,
    kv_heads: u32,
    gh: u32,
    gw: u32,
    q_off: u32,
    q_stride: u32,
    k_off4: u32,
    k_stride4: u32,
    v_off4: u32,
    v_stride4: u32,
    o_off: u32,
    o_stride: u32,
    scale: f32,
    rows: u32,
    _pad0: u32,
    _pad1: u32,
}

#ifdef RELPOS
// ---- RELPOS: SAM's attention with decomposed relative-position bias, over blocks ----
// Rows come in blocks of gh*gw (a window, or the whole grid for global attention); each query
// row attends only to the keys of its block, with
//   score(i, j) = scale * q_i·k_j + q_i·Rh[hi - hj + gh - 1] + q_i·Rw[wi - wj + gw - 1]
// where (hi, wi) = divmod(i mod gh*gw, gw) (the same for j).
// `attn_rel_bias` (flag RELBIAS) first writes both bias tables of every (row, head):
// relb[(row * heads + h) * (gh + gw) + n] = q·Rh[hi - n + gh - 1] (n < gh) or
// q·Rw[wi - (n - gh) + gw - 1]; they live in memory rather than in the workgroup, so the
// grid size is not bounded by workgroup memory. `attention_rel` then runs a flash-style
// loop over key tiles with both products register-tiled like the GEMM: 64 threads per
// (32 query rows of a block, head, block); thread (tx, ty) scores rows ty + 8i against keys
// tx + 8j (i, j < 4) and accumulates rows ty + 8i, head-dim vec4 columns tx (and tx + 8 for
// HD64). Interleaved rows and keys keep every workgroup-memory read conflict-free (rows are
// padded to DP4 vec4s). Named accumulators, no dynamically indexed register arrays.

const BQ: u32 = 32u;
const BK: u32 = 32u;
const DP4: u32 = D4 + 1u;
// Row stride of the transposed probabilities (vec4s of 4 rows): padded against store conflicts.
const PP: u32 = 9u;

#ifdef RELBIAS
@group(0) @binding(0) var<uniform> rp: RelAttnParams;
@group(0) @binding(1) var<storage, read> q: array<T>;
@group(0) @binding(2) var<storage, read> rel_h: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> rel_w: array<vec4<T>>;
@group(0) @binding(4) var<storage, read_write> relb: array<f32>;

@compute @workgroup_size(256)
fn attn_rel_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 256u + lid;
    let nb = rp.gh + rp.gw;
    if (e >= rp.rows * rp.heads * nb) {
        return;
    }
    let n = e % nb;
    let h = (e / nb) % rp.heads;
    let row = e / (nb * rp.heads);
    let i = row % (rp.gh * rp.gw);
    let qb = rp.q_off + row * rp.q_stride + h * D;
    var s = vec4<f32>(0.0);
    if (n < rp.gh) {
        let rb = (i / rp.gw + rp.gh - 1u - n) * D4;
        for (var d = 0u; d < D4; d++) {
            s = fma(q4(qb + 4u * d), vec4<f32>(rel_h[rb + d]), s);
        }
    } else {
        let rb = (i % rp.gw + rp.gw - 1u - (n - rp.gh)) * D4;
        for (var d = 0u; d < D4; d++) {
            s = fma(q4(qb + 4u * d), vec4<f32>(rel_w[rb + d]), s);
        }
    }
    relb[e] = s.x + s.y + s.z + s.w;
}

// Four consecutive q values (q's view may start and stride anywhere).
fn q4(i: u32) -> vec4<f32> {
    return vec4<f32>(f32(q[i]), f32(q[i + 1u]), f32(q[i + 2u]), f32(q[i + 3u]));
}
#else
@group(0) @binding(0) var<uniform> rp: RelAttnParams;
@group(0) @binding(1) var<storage, read> q: array<T>;
@group(0) @binding(2) var<storage, read> k: array<vec4<T>>;
@group(0) @binding(3) var<storage, read> v: array<vec4<T>>;
#ifdef CAUSAL
// [position of query row 0, number of valid kv rows], as `attention`'s.
@group(0) @binding(4) var<storage, read> seqv: array<u32>;
#else
@group(0) @binding(4) var<storage, read> relb: array<f32>;
#endif
@group(0) @binding(5) var<storage, read_write> o: array<T>;

// The query tile, [row][DP4].
var<workgroup> qs: array<vec4<f32>, BQ * DP4>;
// The key tile, then the value tile, [key][DP4].
var<workgroup> kvs: array<vec4<f32>, BK * DP4>;
// Probabilities [key][PP], each vec4 = rows ty, ty + 8, ty + 16, ty + 24.
var<workgroup> pt: array<vec4<f32>, BK * PP>;
// Per (tx, ty): the thread's 4 rows' tile maxima, at the end their partial sums.
var<workgroup> red: array<vec4<f32>, 64>;

// Scores of one query row against the thread's 4 keys.
fn dot4(qv: vec4<f32>, k0: vec4<f32>, k1: vec4<f32>, k2: vec4<f32>, k3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(qv, k0), dot(qv, k1), dot(qv, k2), dot(qv, k3));
}

fn max4(a: vec4<f32>) -> f32 {
    return max(max(a.x, a.y), max(a.z, a.w));
}

fn sum4(a: vec4<f32>) -> f32 {
    return a.x + a.y + a.z + a.w;
}

#ifndef CAUSAL
// Both bias terms of the row whose table starts at `base`, for keys in grid rows hj and
// columns wj (offset by gh into the table); NEG where the key is past the block.
fn bias4(base: u32, hj: vec4<u32>, wj: vec4<u32>, valid: vec4<bool>) -> vec4<f32> {
    let b = vec4<f32>(
        relb[base + hj.x] + relb[base + wj.x],
        relb[base + hj.y] + relb[base + wj.y],
        relb[base + hj.z] + relb[base + wj.z],
        relb[base + hj.w] + relb[base + wj.w],
    );
    return select(vec4<f32>(NEG), b, valid);
}
#endif

// p = exp(s - m), zero for keys past the block.
fn probs(s: vec4<f32>, m: f32, valid: vec4<bool>) -> vec4<f32> {
    return select(vec4<f32>(0.0), exp(s - m), valid);
}

@compute @workgroup_size(64)
fn attention_rel(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let h = wid.y;
    let kvh = h / (rp.heads / rp.kv_heads);
    let blk = rp.gh * rp.gw;
    let b0 = wid.z * blk;
    let r0 = wid.x * BQ;
    let tx = t % 8u;
    let ty = t / 8u;
#ifdef CAUSAL
    // One block of q rows (gh = rows, gw = 1) over the cache's keys: key j is visible to query
    // row i when j <= pos0 + i; keys past the workgroup's last row's are never loaded.
    let q_rows = blk;
    let pos0 = seqv[0];
    let kend = min(seqv[1], pos0 + min(r0 + BQ, q_rows));
    let qpos = pos0 + r0 + ty + vec4<u32>(0u, 8u, 16u, 24u);
#else
    let q_rows = blk;
    let kend = blk;
#endif
    for (var e = t; e < BQ * D4; e += 64u) {
        let r = e / D4;
        let c = e % D4;
        var qv = vec4<f32>(0.0);
        if (r0 + r < q_rows) {
            let qb = rp.q_off + (b0 + r0 + r) * rp.q_stride + h * D + 4u * c;
            qv = vec4<f32>(f32(q[qb]), f32(q[qb + 1u]), f32(q[qb + 2u]), f32(q[qb + 3u]));
        }
        qs[r * DP4 + c] = qv;
    }
    // Running max and (this thread's share of the) sum of rows ty + 8i, as vec4 over i.
    var m = vec4<f32>(NEG);
    var l = vec4<f32>(0.0);
    var o0 = vec4<f32>(0.0);
    var o1 = vec4<f32>(0.0);
    var o2 = vec4<f32>(0.0);
    var o3 = vec4<f32>(0.0);
#ifdef HD64
    var o4 = vec4<f32>(0.0);
    var o5 = vec4<f32>(0.0);
    var o6 = vec4<f32>(0.0);
    var o7 = vec4<f32>(0.0);
#endif
#ifdef HD128
    var o8 = vec4<f32>(0.0);
    var o9 = vec4<f32>(0.0);
    var o10 = vec4<f32>(0.0);
    var o11 = vec4<f32>(0.0);
    var o12 = vec4<f32>(0.0);
    var o13 = vec4<f32>(0.0);
    var o14 = vec4<f32>(0.0);
    var o15 = vec4<f32>(0.0);
#endif
    // Where each of the thread's rows' bias tables starts (rows past the block: clamped, never written).
    let nb = rp.gh + rp.gw;
    let rows = min(r0 + ty + vec4<u32>(0u, 8u, 16u, 24u), vec4<u32>(blk - 1u));
    let tb = ((b0 + rows) * rp.heads + h) * nb;
    let kbase = rp.k_off4 + b0 * rp.k_stride4 + kvh * D4;
    let vbase = rp.v_off4 + b0 * rp.v_stride4 + kvh * D4;
    // kend is uniform, so every barrier below is reached by all threads.
    for (var t0 = 0u; t0 < kend; t0 += BK) {
        for (var e = t; e < BK * D4; e += 64u) {
            let kk = t0 + e / D4;
            var kv = vec4<f32>(0.0);
            if (kk < kend) {
                kv = vec4<f32>(k[kbase + kk * rp.k_stride4 + e % D4]);
            }
            kvs[(e / D4) * DP4 + e % D4] = kv;
        }
        workgroupBarrier();
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        var s3 = vec4<f32>(0.0);
        for (var d = 0u; d < D4; d++) {
            let k0 = kvs[tx * DP4 + d];
            let k1 = kvs[(tx + 8u) * DP4 + d];
            let k2 = kvs[(tx + 16u) * DP4 + d];
            let k3 = kvs[(tx + 24u) * DP4 + d];
            s0 += dot4(qs[ty * DP4 + d], k0, k1, k2, k3);
            s1 += dot4(qs[(ty + 8u) * DP4 + d], k0, k1, k2, k3);
            s2 += dot4(qs[(ty + 16u) * DP4 + d], k0, k1, k2, k3);
            s3 += dot4(qs[(ty + 24u) * DP4 + d], k0, k1, k2, k3);
        }
        // The thread's keys tx + 8j: validity, grid row and (offset) grid column.
        let kk = t0 + tx + vec4<u32>(0u, 8u, 16u, 24u);
        let valid = kk < vec4<u32>(kend);
#ifdef CAUSAL
        // Each of the thread's rows has its own horizon.
        let v0 = valid & (kk <= vec4<u32>(qpos.x));
        let v1 = valid & (kk <= vec4<u32>(qpos.y));
        let v2 = valid & (kk <= vec4<u32>(qpos.z));
        let v3 = valid & (kk <= vec4<u32>(qpos.w));
        s0 = select(vec4<f32>(NEG), rp.scale * s0, v0);
        s1 = select(vec4<f32>(NEG), rp.scale * s1, v1);
        s2 = select(vec4<f32>(NEG), rp.scale * s2, v2);
        s3 = select(vec4<f32>(NEG), rp.scale * s3, v3);
#else
        let v0 = valid;
        let v1 = valid;
        let v2 = valid;
        let v3 = valid;
        let kc = min(kk, vec4<u32>(blk - 1u));
        let hj = kc / rp.gw;
        let wj = kc - hj * rp.gw + rp.gh;
#ifdef NOBIAS
        // Plain bidirectional attention over the block (the SigLIP tower): no bias terms.
        let zb = select(vec4<f32>(NEG), vec4<f32>(0.0), valid);
        s0 = rp.scale * s0 + zb;
        s1 = rp.scale * s1 + zb;
        s2 = rp.scale * s2 + zb;
        s3 = rp.scale * s3 + zb;
#else
        s0 = rp.scale * s0 + bias4(tb.x, hj, wj, valid);
        s1 = rp.scale * s1 + bias4(tb.y, hj, wj, valid);
        s2 = rp.scale * s2 + bias4(tb.z, hj, wj, valid);
        s3 = rp.scale * s3 + bias4(tb.w, hj, wj, valid);
#endif
#endif
        red[tx * 8u + ty] = vec4<f32>(max4(s0), max4(s1), max4(s2), max4(s3));
        workgroupBarrier();
        // The key tile is consumed: the value tile replaces it.
        for (var e = t; e < BK * D4; e += 64u) {
            let kk = t0 + e / D4;
            var vv = vec4<f32>(0.0);
            if (kk < kend) {
                vv = vec4<f32>(v[vbase + kk * rp.v_stride4 + e % D4]);
            }
            kvs[(e / D4) * DP4 + e % D4] = vv;
        }
        var tile_max = red[ty];
        for (var x = 1u; x < 8u; x++) {
            tile_max = max(tile_max, red[x * 8u + ty]);
        }
        // Key 0 is visible to every row and lies in the first tile, so m is finite from there on.
        let m_new = max(m, tile_max);
        let corr = exp(m - m_new);
        m = m_new;
        let p0 = probs(s0, m.x, v0);
        let p1 = probs(s1, m.y, v1);
        let p2 = probs(s2, m.z, v2);
        let p3 = probs(s3, m.w, v3);
        l = l * corr + vec4<f32>(sum4(p0), sum4(p1), sum4(p2), sum4(p3));
        pt[tx * PP + ty] = vec4<f32>(p0.x, p1.x, p2.x, p3.x);
        pt[(tx + 8u) * PP + ty] = vec4<f32>(p0.y, p1.y, p2.y, p3.y);
        pt[(tx + 16u) * PP + ty] = vec4<f32>(p0.z, p1.z, p2.z, p3.z);
        pt[(tx + 24u) * PP + ty] = vec4<f32>(p0.w, p1.w, p2.w, p3.w);
        o0 *= corr.x;
        o1 *= corr.y;
        o2 *= corr.z;
        o3 *= corr.w;
#ifdef HD64
        o4 *= corr.x;
        o5 *= corr.y;
        o6 *= corr.z;
        o7 *= corr.w;
#endif
#ifdef HD128
        o8 *= corr.x;
        o9 *= corr.y;
        o10 *= corr.z;
        o11 *= corr.w;
        o12 *= corr.x;
        o13 *= corr.y;
        o14 *= corr.z;
        o15 *= corr.w;
#endif
        workgroupBarrier();
        for (var j = 0u; j < BK; j++) {
            let pr = pt[j * PP + ty];
            let va = kvs[j * DP4 + tx];
            o0 = fma(vec4<f32>(pr.x), va, o0);
            o1 = fma(vec4<f32>(pr.y), va, o1);
            o2 = fma(vec4<f32>(pr.z), va, o2);
            o3 = fma(vec4<f32>(pr.w), va, o3);
#ifdef HD64
            let vb = kvs[j * DP4 + tx + 8u];
            o4 = fma(vec4<f32>(pr.x), vb, o4);
            o5 = fma(vec4<f32>(pr.y), vb, o5);
            o6 = fma(vec4<f32>(pr.z), vb, o6);
            o7 = fma(vec4<f32>(pr.w), vb, o7);
#endif
#ifdef HD128
            let vc = kvs[j * DP4 + tx + 16u];
            o8 = fma(vec4<f32>(pr.x), vc, o8);
            o9 = fma(vec4<f32>(pr.y), vc, o9);
            o10 = fma(vec4<f32>(pr.z), vc, o10);
            o11 = fma(vec4<f32>(pr.w), vc, o11);
            let vd = kvs[j * DP4 + tx + 24u];
            o12 = fma(vec4<f32>(pr.x), vd, o12);
            o13 = fma(vec4<f32>(pr.y), vd, o13);
            o14 = fma(vec4<f32>(pr.z), vd, o14);
            o15 = fma(vec4<f32>(pr.w), vd, o15);
#endif
        }
        workgroupBarrier();
    }
    // The 8 threads of a row hold its sum in shares (on the same running max).
    red[tx * 8u + ty] = l;
    workgroupBarrier();
    var total = red[ty];
    for (var x = 1u; x < 8u; x++) {
        total += red[x * 8u + ty];
    }
    let inv = 1.0 / total;
    store_rel(r0 + ty, blk, b0, h, 4u * tx, o0 * inv.x);
    store_rel(r0 + ty + 8u, blk, b0, h, 4u * tx, o1 * inv.y);
    store_rel(r0 + ty + 16u, blk, b0, h, 4u * tx, o2 * inv.z);
    store_rel(r0 + ty + 24u, blk, b0, h, 4u * tx, o3 * inv.w);
#ifdef HD64
    store_rel(r0 + ty, blk, b0, h, 4u * tx + 32u, o4 * inv.x);
    store_rel(r0 + ty + 8u, blk, b0, h, 4u * tx + 32u, o5 * inv.y);
    store_rel(r0 + ty + 16u, blk, b0, h, 4u * tx + 32u, o6 * inv.z);
    store_rel(r0 + ty + 24u, blk, b0, h, 4u * tx + 32u, o7 * inv.w);
#endif
#ifdef HD128
    store_rel(r0 + ty, blk, b0, h, 4u * tx + 64u, o8 * inv.x);
    store_rel(r0 + ty + 8u, blk, b0, h, 4u * tx + 64u, o9 * inv.y);
    store_rel(r0 + ty + 16u, blk, b0, h, 4u * tx + 64u, o10 * inv.z);
    store_rel(r0 + ty + 24u, blk, b0, h, 4u * tx + 64u, o11 * inv.w);
    store_rel(r0 + ty, blk, b0, h, 4u * tx + 96u, o12 * inv.x);
    store_rel(r0 + ty + 8u, blk, b0, h, 4u * tx + 96u, o13 * inv.y);
    store_rel(r0 + ty + 16u, blk, b0, h, 4u * tx + 96u, o14 * inv.z);
    store_rel(r0 + ty + 24u, blk, b0, h, 4u * tx + 96u, o15 * inv.w);
#endif
}

// Four output values of row `row` of the block (skipped past its end), head dims c..c+3.
fn store_rel(row: u32, blk: u32, b0: u32, h: u32, c: u32, val: vec4<f32>) {
    if (row >= blk) {
        return;
    }
    let ob = rp.o_off + (b0 + row) * rp.o_stride + h * D + c;
    o[ob] = T(val.x);
    o[ob + 1u] = T(val.y);
    o[ob + 2u] = T(val.z);
    o[ob + 3u] = T(val.w);
}
#endif
#else
@group(0) @binding(0) var<uniform> p: AttnParams;
@group(0) @binding(1) var<storage, read> seq: array<u32>;

// Keys visible to query row `i`.
fn visible_keys(i: u32) -> u32 {
    let kv_len = seq[1];
    if (p.causal != 0u) {
        return min(kv_len, seq[0] + i + 1u);
    }
    return kv_len;
}

// Keys per split: p.split_len, or with 0 the valid keys seq[1] spread over the splits in
// whole steps of 16, so a step replayed at a later position keeps every split busy (the same
// formula as attention_decode.wgsl's).
fn split_keys() -> u32 {
    if (p.split_len != 0u) {
        return p.split_len;
    }
    return max(16u, ((seq[1] + p.splits - 1u) / p.splits + 15u) / 16u * 16u);
}

#ifndef COMBINE
@group(0) @binding(2) var<storage, read> q: array<T>;
@group(0) @binding(3) var<storage, read> k: array<vec4<T>>;
@group(0) @binding(4) var<storage, read> v: array<vec4<T>>;
#ifdef SPLIT
// Per (row, head, split): D accumulator values, then the running max and sum (D + 4 floats).
@group(0) @binding(5) var<storage, read_write> part: array<f32>;
#else
@group(0) @binding(5) var<storage, read_write> o: array<T>;
#endif

var<workgroup> qs: array<vec4<f32>, D4>;
var<workgroup> sc: array<f32, TILE>;
var<workgroup> ps: array<f32, TILE>;
var<workgroup> red: array<vec4<f32>, TILE>;

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let i = wid.x;
    let h = wid.y;
    let kvh = h / (p.heads / p.kv_heads);
    let split_len = split_keys();
    let kend = min(visible_keys(i), (wid.z + 1u) * split_len);
    let kstart = wid.z * split_len;
    let qb = p.q_off + i * p.q_stride + h * D;
    if (t < D4) {
        qs[t] = vec4<f32>(f32(q[qb + 4u * t]), f32(q[qb + 4u * t + 1u]), f32(q[qb + 4u * t + 2u]), f32(q[qb + 4u * t + 3u])) * p.scale;
    }
    workgroupBarrier();
    let col = t % D4;
    let kp = t / D4;
    var acc = vec4<f32>(0.0);
    var run_max = NEG;
    var run_sum = 0.0;
    // kstart, kend are uniform across the workgroup, so every barrier below is reached by all.
    for (var t0 = kstart; t0 < kend; t0 += TILE) {
        let key = t0 + t;
        var s = NEG;
        if (key < kend) {
            let kb = p.k_off4 + key * p.k_stride4 + kvh * D4;
            var dv = 0.0;
            for (var d = 0u; d < D4; d++) {
                dv += dot(qs[d], vec4<f32>(k[kb + d]));
            }
            s = dv;
        }
        sc[t] = s;
        workgroupBarrier();
        var tile_max = NEG;
        for (var j = 0u; j < TILE; j++) {
            tile_max = max(tile_max, sc[j]);
        }
        let new_max = max(run_max, tile_max);
        ps[t] = select(0.0, exp(s - new_max), key < kend);
        let corr = exp(run_max - new_max);
        acc *= corr;
        run_sum *= corr;
        run_max = new_max;
        workgroupBarrier();
        var tile_sum = 0.0;
        for (var j = 0u; j < TILE; j++) {
            tile_sum += ps[j];
        }
        run_sum += tile_sum;
        let n = min(TILE, kend - t0);
        for (var j = kp; j < n; j += KP) {
            acc += ps[j] * vec4<f32>(v[p.v_off4 + (t0 + j) * p.v_stride4 + kvh * D4 + col]);
        }
    }
    // The KP threads of each column add up their shares.
    red[t] = acc;
    workgroupBarrier();
    if (kp == 0u) {
        var a = red[col];
        for (var r = 1u; r < KP; r++) {
            a += red[r * D4 + col];
        }
#ifdef SPLIT
        let pb = ((i * p.heads + h) * p.splits + wid.z) * (D + 4u);
        part[pb + 4u * col] = a.x;
        part[pb + 4u * col + 1u] = a.y;
        part[pb + 4u * col + 2u] = a.z;
        part[pb + 4u * col + 3u] = a.w;
        if (col == 0u) {
            part[pb + D] = run_max;
            part[pb + D + 1u] = run_sum;
        }
#else
        let r = a / run_sum;
        let ob = p.o_off + i * p.o_stride + h * D;
        o[ob + 4u * col] = T(r.x);
        o[ob + 4u * col + 1u] = T(r.y);
        o[ob + 4u * col + 2u] = T(r.z);
        o[ob + 4u * col + 3u] = T(r.w);
#endif
    }
}
#endif

#ifdef COMBINE
// Each split's partial: D accumulator values, then its max and sum, padded to D + 4 floats so
// every partial starts on a vec4.
@group(0) @binding(2) var<storage, read> part4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> o: array<T>;

// One workgroup of 256 per (row, head): invocation t takes the vec4 of dims t % D4 over every
// SL-th split from t / D4 and merges them as an online softmax does (its own running max, its
// sums rescaled as it rises), so the splits' loads overlap and no invocation walks all of them;
// the SL merges of each dim are then combined through workgroup memory.
const SL: u32 = 256u / D4;
const P4: u32 = D4 + 1u;
var<workgroup> cm: array<vec2<f32>, 256>;
var<workgroup> cacc: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn attn_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let i = wid.x;
    let h = wid.y;
    let split_len = split_keys();
    let used = min(p.splits, (visible_keys(i) + split_len - 1u) / split_len);
    let base = (i * p.heads + h) * p.splits * P4;
    let d4 = t % D4;
    // (max, sum) of the splits merged so far and their rescaled accumulators. Every used split
    // saw a key, so the first one's weight exp(NEG - max) clears the empty start.
    var m = NEG;
    var l = 0.0;
    var a = vec4<f32>(0.0);
    for (var s = t / D4; s < used; s += SL) {
        let st = part4[base + s * P4 + D4];
        let acc = part4[base + s * P4 + d4];
        let mn = max(m, st.x);
        let c = exp(m - mn);
        let w = exp(st.x - mn);
        a = a * c + w * acc;
        l = l * c + w * st.y;
        m = mn;
    }
    cm[t] = vec2<f32>(m, l);
    cacc[t] = a;
    workgroupBarrier();
    if (t < D4) {
        var mx = NEG;
        for (var j = 0u; j < SL; j++) {
            mx = max(mx, cm[j * D4 + t].x);
        }
        var sum = vec4<f32>(0.0);
        var total = 0.0;
        for (var j = 0u; j < SL; j++) {
            // An invocation past the used splits merged nothing: max NEG, weight 0.
            let e = cm[j * D4 + t];
            let c = select(0.0, exp(e.x - mx), e.x > NEG);
            sum += c * cacc[j * D4 + t];
            total += c * e.y;
        }
        let r = sum / total;
        let ob = p.o_off + i * p.o_stride + h * D + 4u * t;
        o[ob] = T(r.x);
        o[ob + 1u] = T(r.y);
        o[ob + 2u] = T(r.z);
        o[ob + 3u] = T(r.w);
    }
}
#endif
#endif
