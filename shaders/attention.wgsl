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

struct AttnParams {
    m: u32,
    heads: u32,
    kv_heads: u32,
    causal: u32,
    q_off: u32,
    q_stride: u32,
    k_off4: u32,
    k_stride4: u32,
    v_off4: u32,
    v_stride4: u32,
    o_off: u32,
    o_stride: u32,
    scale: f32,
    splits: u32,
    split_len: u32,
    _pad: u32,
}

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

#ifndef COMBINE
@group(0) @binding(2) var<storage, read> q: array<T>;
@group(0) @binding(3) var<storage, read> k: array<vec4<T>>;
@group(0) @binding(4) var<storage, read> v: array<vec4<T>>;
#ifdef SPLIT
// Per (row, head, split): D accumulator values, then the running max and sum.
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
    let kend = min(visible_keys(i), (wid.z + 1u) * p.split_len);
    let kstart = wid.z * p.split_len;
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
        let pb = ((i * p.heads + h) * p.splits + wid.z) * (D + 2u);
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
@group(0) @binding(2) var<storage, read> part: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<T>;

// One workgroup per (row, head): weights each split's partial by exp(its max - the max).
@compute @workgroup_size(64)
fn attn_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let i = wid.x;
    let h = wid.y;
    let used = min(p.splits, (visible_keys(i) + p.split_len - 1u) / p.split_len);
    let base = (i * p.heads + h) * p.splits * (D + 2u);
    var mx = NEG;
    for (var s = 0u; s < used; s++) {
        mx = max(mx, part[base + s * (D + 2u) + D]);
    }
    var total = 0.0;
    for (var s = 0u; s < used; s++) {
        total += exp(part[base + s * (D + 2u) + D] - mx) * part[base + s * (D + 2u) + D + 1u];
    }
    let ob = p.o_off + i * p.o_stride + h * D;
    for (var d = t; d < D; d += 64u) {
        var a = 0.0;
        for (var s = 0u; s < used; s++) {
            a += exp(part[base + s * (D + 2u) + D] - mx) * part[base + s * (D + 2u) + d];
        }
        o[ob + d] = T(a / total);
    }
}
#endif
