// Attention for a few query rows against a long KV cache (decode), on 32-wide subgroups: one
// workgroup of 4 subgroups per (query row, head, key split). Lane l holds dims 4l..4l+3 of the
// 128-wide head, so a key's row is one coalesced 256-byte load per subgroup and its score one
// subgroupAdd; each subgroup runs an online softmax over every 4th key of the split in
// registers, 4 keys per step for independent loads, and the 4 subgroups are merged at the end
// into the (acc, max, sum) partials `attn_combine` reads. No barrier inside the key loop.
// Flags: F16, SUBGROUPS (always: the host picks this kernel only for 32-wide subgroups).

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
@group(0) @binding(3) var<storage, read> k: array<vec4<T>>;
@group(0) @binding(4) var<storage, read> v: array<vec4<T>>;
@group(0) @binding(5) var<storage, read_write> part: array<f32>;

var<workgroup> w_max: array<f32, NW>;
var<workgroup> w_sum: array<f32, NW>;
var<workgroup> w_acc: array<vec4<f32>, 128>;

// Score of `key` (already scaled through q), or NEG past the split's end.
fn score(q4: vec4<f32>, kvh: u32, key: u32, kend: u32, lane: u32) -> f32 {
    var d = 0.0;
    if (key < kend) {
        d = dot(q4, vec4<f32>(k[p.k_off4 + key * p.k_stride4 + kvh * D4 + lane]));
    }
    let s = subgroupAdd(d);
    return select(NEG, s, key < kend);
}

fn value(kvh: u32, key: u32, kend: u32, lane: u32) -> vec4<f32> {
    if (key < kend) {
        return vec4<f32>(v[p.v_off4 + key * p.v_stride4 + kvh * D4 + lane]);
    }
    return vec4<f32>(0.0);
}

// Keys per split (as attention.wgsl's): p.split_len, or with 0 the valid keys spread over
// the splits in whole steps of 16 (one step of 4 keys per subgroup).
fn split_keys() -> u32 {
    if (p.split_len != 0u) {
        return p.split_len;
    }
    return max(16u, ((seq[1] + p.splits - 1u) / p.splits + 15u) / 16u * 16u);
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
    let split_len = split_keys();
    kend = min(kend, (wid.z + 1u) * split_len);
    let kstart = wid.z * split_len;
    let qb = p.q_off + i * p.q_stride + h * D + 4u * lane;
    let q4 = vec4<f32>(f32(q[qb]), f32(q[qb + 1u]), f32(q[qb + 2u]), f32(q[qb + 3u])) * p.scale;
    var run_max = NEG;
    var run_sum = 0.0;
    var acc = vec4<f32>(0.0);
    // Subgroup w takes keys base + w + j*NW of each step of 16 (the loop itself is uniform);
    // four per step, so their loads overlap.
    for (var base = kstart; base < kend; base += 4u * NW) {
        let k0 = base + w;
        let s0 = score(q4, kvh, k0, kend, lane);
        let s1 = score(q4, kvh, k0 + NW, kend, lane);
        let s2 = score(q4, kvh, k0 + 2u * NW, kend, lane);
        let s3 = score(q4, kvh, k0 + 3u * NW, kend, lane);
        let new_max = max(max(run_max, max(s0, s1)), max(s2, s3));
        let corr = exp(run_max - new_max);
        // Past-the-end keys weigh 0 (exp(NEG - NEG) would be 1 while no key has been seen).
        let e0 = select(0.0, exp(s0 - new_max), s0 > NEG);
        let e1 = select(0.0, exp(s1 - new_max), s1 > NEG);
        let e2 = select(0.0, exp(s2 - new_max), s2 > NEG);
        let e3 = select(0.0, exp(s3 - new_max), s3 > NEG);
        run_sum = run_sum * corr + (e0 + e1) + (e2 + e3);
        acc = acc * corr + e0 * value(kvh, k0, kend, lane) + e1 * value(kvh, k0 + NW, kend, lane)
            + e2 * value(kvh, k0 + 2u * NW, kend, lane) + e3 * value(kvh, k0 + 3u * NW, kend, lane);
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
        let pb = ((i * p.heads + h) * p.splits + wid.z) * (D + 4u);
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
