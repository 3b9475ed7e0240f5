// Attention for a few query rows against a long KV cache (decode), on 32-wide subgroups: one
// workgroup of 4 subgroups per (query row, head, key split). Lane l holds dims 4l..4l+3 of the
// 128-wide head, so a key's row is one coalesced 256-byte load per subgroup and its score one
// subgroupAdd; each subgroup runs an online softmax over every 4th key of the split in
// registers, 4 keys per step for independent loads, and the 4 subgroups are merged at the end
// into the (acc, max, sum) partials `attn_combine` reads. No barrier inside the key loop.
// Flags: F16, SUBGROUPS (always: the host picks this kernel only for 32-wide subgroups), ROPE.
//
// Flag ROPE (one causal query row): rope_kv fused in, as attention.wgsl's ROPE. Each subgroup
// rotates q and the new key in registers (lane l's partners at dims ±64 are in lane l ^ 16),
// uses them for key seq[0] in place of the cache row, and subgroup 0 of one workgroup per kv
// head stores the new key and value into cache row seq[0].

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

const D: u32 = 128u;
const D4: u32 = 32u;
const NW: u32 = 4u;
const NEG: f32 = -3.4028234e38;

#include attn_params

@group(0) @binding(0) var<uniform> p: AttnParams;
@group(0) @binding(1) var<storage, read> seq: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<T>;
#ifdef ROPE
// The KV cache: the k and v views index one read-write binding.
@group(0) @binding(3) var<storage, read_write> kv: array<vec4<T>>;
@group(0) @binding(4) var<storage, read> inv_freq: array<f32>;
#else
@group(0) @binding(3) var<storage, read> k: array<vec4<T>>;
@group(0) @binding(4) var<storage, read> v: array<vec4<T>>;
#endif
@group(0) @binding(5) var<storage, read_write> part: array<f32>;

var<workgroup> w_max: array<f32, NW>;
var<workgroup> w_sum: array<f32, NW>;
var<workgroup> w_acc: array<vec4<f32>, 128>;

#ifdef ROPE
#include sincos

// The lane's 4 dims rotated by the angles' sines `sn` and cosines `cs`, rounded to T as
// rope.wgsl stores them: lanes 0..15 hold x1 of rope's pairs, lanes 16..31 x2.
fn rotate(x: vec4<f32>, sn: vec4<f32>, cs: vec4<f32>, hi: bool) -> vec4<T> {
    let y = subgroupShuffleXor(x, 16u);
    return vec4<T>(select(x * cs - y * sn, x * cs + y * sn, hi));
}

// The lane's vec4 of key `key`: the new key (`kn`, from registers) at position `pos`.
fn key4(kvh: u32, key: u32, lane: u32, pos: u32, kn: vec4<f32>) -> vec4<f32> {
    if (key == pos) {
        return kn;
    }
    return vec4<f32>(kv[p.k_off4 + key * p.k_stride4 + kvh * D4 + lane]);
}

fn value4(kvh: u32, key: u32, lane: u32, pos: u32, vn: vec4<f32>) -> vec4<f32> {
    if (key == pos) {
        return vn;
    }
    return vec4<f32>(kv[p.v_off4 + key * p.v_stride4 + kvh * D4 + lane]);
}
#else
fn key4(kvh: u32, key: u32, lane: u32, pos: u32, kn: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(k[p.k_off4 + key * p.k_stride4 + kvh * D4 + lane]);
}

fn value4(kvh: u32, key: u32, lane: u32, pos: u32, vn: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(v[p.v_off4 + key * p.v_stride4 + kvh * D4 + lane]);
}
#endif

// Score of `key` (already scaled through q), or NEG past the split's end.
fn score(q4: vec4<f32>, kvh: u32, key: u32, kend: u32, lane: u32, pos: u32, kn: vec4<f32>) -> f32 {
    var d = 0.0;
    if (key < kend) {
        d = dot(q4, key4(kvh, key, lane, pos, kn));
    }
    let s = subgroupAdd(d);
    return select(NEG, s, key < kend);
}

fn value(kvh: u32, key: u32, kend: u32, lane: u32, pos: u32, vn: vec4<f32>) -> vec4<f32> {
    if (key < kend) {
        return value4(kvh, key, lane, pos, vn);
    }
    return vec4<f32>(0.0);
}

@compute @workgroup_size(128)
fn attn_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let i = wid.x;
    let h = wid.y;
    let kvh = h / (p.heads / p.kv_heads);
    let w = t / 32u;
    let lane = t % 32u;
    var kend = seq[1];
    if (p.causal != 0u) {
        kend = min(kend, seq[0] + i + 1u);
    }
    kend = min(kend, (wid.z + 1u) * p.split_len);
    let kstart = wid.z * p.split_len;
    let qb = p.q_off + i * p.q_stride + h * D + 4u * lane;
    let pos = seq[0] + i;
#ifdef ROPE
    // Angles of the lane's dims 4l..4l+3 (mod 64: rope's pair index).
    let fi = 4u * (lane % 16u);
    let a0 = sincos(f32(pos) * inv_freq[fi]);
    let a1 = sincos(f32(pos) * inv_freq[fi + 1u]);
    let a2 = sincos(f32(pos) * inv_freq[fi + 2u]);
    let a3 = sincos(f32(pos) * inv_freq[fi + 3u]);
    let sn = vec4<f32>(a0.x, a1.x, a2.x, a3.x);
    let cs = vec4<f32>(a0.y, a1.y, a2.y, a3.y);
    let hi = lane >= 16u;
    // The row's new key and value heads follow its q heads.
    let kb = p.q_off + i * p.q_stride + (p.heads + kvh) * D + 4u * lane;
    let vb = kb + p.kv_heads * D;
    let qr = rotate(vec4<f32>(f32(q[qb]), f32(q[qb + 1u]), f32(q[qb + 2u]), f32(q[qb + 3u])), sn, cs, hi);
    let kr = rotate(vec4<f32>(f32(q[kb]), f32(q[kb + 1u]), f32(q[kb + 2u]), f32(q[kb + 3u])), sn, cs, hi);
    let vr = vec4<T>(q[vb], q[vb + 1u], q[vb + 2u], q[vb + 3u]);
    let q4 = vec4<f32>(qr) * p.scale;
    let kn = vec4<f32>(kr);
    let vn = vec4<f32>(vr);
    // Stored once per kv head: subgroup 0 of the split holding pos, for the group's first q head.
    if (w == 0u && h % (p.heads / p.kv_heads) == 0u && wid.z == pos / p.split_len && pos < p.kv_cap) {
        kv[p.k_off4 + pos * p.k_stride4 + kvh * D4 + lane] = kr;
        kv[p.v_off4 + pos * p.v_stride4 + kvh * D4 + lane] = vr;
    }
#else
    let q4 = vec4<f32>(f32(q[qb]), f32(q[qb + 1u]), f32(q[qb + 2u]), f32(q[qb + 3u])) * p.scale;
    let kn = vec4<f32>(0.0);
    let vn = kn;
#endif
    var run_max = NEG;
    var run_sum = 0.0;
    var acc = vec4<f32>(0.0);
    // Subgroup w takes keys base + w + j*NW of each step of 16 (the loop itself is uniform);
    // four per step, so their loads overlap.
    for (var base = kstart; base < kend; base += 4u * NW) {
        let k0 = base + w;
        let s0 = score(q4, kvh, k0, kend, lane, pos, kn);
        let s1 = score(q4, kvh, k0 + NW, kend, lane, pos, kn);
        let s2 = score(q4, kvh, k0 + 2u * NW, kend, lane, pos, kn);
        let s3 = score(q4, kvh, k0 + 3u * NW, kend, lane, pos, kn);
        let new_max = max(max(run_max, max(s0, s1)), max(s2, s3));
        let corr = exp(run_max - new_max);
        // Past-the-end keys weigh 0 (exp(NEG - NEG) would be 1 while no key has been seen).
        let e0 = select(0.0, exp(s0 - new_max), s0 > NEG);
        let e1 = select(0.0, exp(s1 - new_max), s1 > NEG);
        let e2 = select(0.0, exp(s2 - new_max), s2 > NEG);
        let e3 = select(0.0, exp(s3 - new_max), s3 > NEG);
        run_sum = run_sum * corr + (e0 + e1) + (e2 + e3);
        acc = acc * corr + e0 * value(kvh, k0, kend, lane, pos, vn) + e1 * value(kvh, k0 + NW, kend, lane, pos, vn)
            + e2 * value(kvh, k0 + 2u * NW, kend, lane, pos, vn) + e3 * value(kvh, k0 + 3u * NW, kend, lane, pos, vn);
        run_max = new_max;
    }
    if (lane == 0u) {
        w_max[w] = run_max;
        w_sum[w] = run_sum;
    }
    w_acc[t] = acc;
    workgroupBarrier();
    // Subgroup 0 merges the four: each weighted by exp(its max - the max).
    if (w == 0u) {
        var mx = NEG;
        for (var j = 0u; j < NW; j++) {
            mx = max(mx, w_max[j]);
        }
        var a = vec4<f32>(0.0);
        var total = 0.0;
        for (var j = 0u; j < NW; j++) {
            // A subgroup that saw no key has max NEG: weight exp(NEG - mx) = 0 unless all are empty.
            let c = select(0.0, exp(w_max[j] - mx), w_max[j] > NEG);
            a += c * w_acc[j * 32u + lane];
            total += c * w_sum[j];
        }
        let pb = ((i * p.heads + h) * p.splits + wid.z) * (D + 2u);
        part[pb + 4u * lane] = a.x;
        part[pb + 4u * lane + 1u] = a.y;
        part[pb + 4u * lane + 2u] = a.z;
        part[pb + 4u * lane + 3u] = a.w;
        if (lane == 0u) {
            part[pb + D] = mx;
            part[pb + D + 1u] = total;
        }
    }
}
