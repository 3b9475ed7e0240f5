// Rotary position embedding, rotate-half convention (HF Llama), in place on a row view that
// holds `heads` heads of `dim` each. Row r is at position seq[0] + r: the base position is a
// storage value so a recorded decode step can be replayed at a new position.
// x1 = x[i], x2 = x[i + dim/2], angle = pos * inv_freq[i] in f32 exactly as HF computes it
// (inv_freq comes from the host, computed the same way as HF); sin/cos as below.
// x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin.

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

struct RopeParams {
    rows: u32,
    heads: u32,
    dim: u32,
    off: u32,
    stride: u32,
    // rope_kv: heads from kv_head0 on are keys; kv_w = keys' (and values') width; capacity of the cache
    kv_head0: u32,
    kv_w: u32,
    capacity: u32,
}

@group(0) @binding(0) var<uniform> p: RopeParams;
@group(0) @binding(1) var<storage, read> seq: array<u32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
#ifdef VEC4
// rope_kv with VEC4: 4 consecutive pairs (and 4 values) per invocation as vector loads; the
// host picks it when the offset, stride and dim / 2 are multiples of 4.
@group(0) @binding(3) var<storage, read_write> x: array<vec4<T>>;
@group(0) @binding(4) var<storage, read_write> cache: array<vec4<T>>;
#else
@group(0) @binding(3) var<storage, read_write> x: array<T>;
#ifdef KV
// rope_kv: the KV cache, rows [capacity, 2 * kv_w] holding k | v.
@group(0) @binding(4) var<storage, read_write> cache: array<T>;
#endif
#endif

#include sincos

#ifndef VEC4
@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let half_dim = p.dim / 2u;
    let idx = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (idx >= p.rows * p.heads * half_dim) { return; }
    let i = idx % half_dim;
    let h = (idx / half_dim) % p.heads;
    let r = idx / (half_dim * p.heads);
    let pos = f32(seq[0] + r);
    let sc = sincos(pos * inv_freq[i]);
    let s = sc.x;
    let c = sc.y;
    let b = p.off + r * p.stride + h * p.dim;
    let x1 = f32(x[b + i]);
    let x2 = f32(x[b + i + half_dim]);
    x[b + i] = T(x1 * c - x2 * s);
    x[b + i + half_dim] = T(x2 * c + x1 * s);
}
#endif

#ifdef VEC4
// rope_kv as below, four pairs i..i+3 (and four values) per invocation.
@compute @workgroup_size(256)
fn rope_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let half_dim = p.dim / 2u;
    // Vectors per half head: the second half's vector lies this many after the first's.
    let quarter = half_dim / 4u;
    let idx = (wid.x + wid.y * nwg.x) * 256u + lid;
    let quads = p.rows * p.heads * quarter;
    if (idx < quads) {
        let i = 4u * (idx % quarter);
        let h = (idx / quarter) % p.heads;
        let r = idx / (quarter * p.heads);
        let pos = f32(seq[0] + r);
        let s0 = sincos(pos * inv_freq[i]);
        let s1 = sincos(pos * inv_freq[i + 1u]);
        let s2 = sincos(pos * inv_freq[i + 2u]);
        let s3 = sincos(pos * inv_freq[i + 3u]);
        let sn = vec4<f32>(s0.x, s1.x, s2.x, s3.x);
        let cs = vec4<f32>(s0.y, s1.y, s2.y, s3.y);
        let b = (p.off + r * p.stride + h * p.dim + i) / 4u;
        let x1 = vec4<f32>(x[b]);
        let x2 = vec4<f32>(x[b + quarter]);
        let y1 = vec4<T>(x1 * cs - x2 * sn);
        let y2 = vec4<T>(x2 * cs + x1 * sn);
        x[b] = y1;
        x[b + quarter] = y2;
        let row = seq[0] + r;
        if (h >= p.kv_head0 && row < p.capacity) {
            let cb = (row * 2u * p.kv_w + (h - p.kv_head0) * p.dim + i) / 4u;
            cache[cb] = y1;
            cache[cb + quarter] = y2;
        }
        return;
    }
    // Values: after the q and k heads in the row.
    let j = idx - quads;
    let vq = p.kv_w / 4u;
    if (j >= p.rows * vq) { return; }
    let r = j / vq;
    let c = 4u * (j % vq);
    let row = seq[0] + r;
    if (row < p.capacity) {
        cache[(row * 2u * p.kv_w + p.kv_w + c) / 4u] = x[(p.off + r * p.stride + p.heads * p.dim + c) / 4u];
    }
}
#else
#ifdef KV
// rope over q and k heads of a fused q | k | v row view, and the rotated keys and the values
// appended to the cache at row seq[0] + r (positions past the cache are dropped): one dispatch.
@compute @workgroup_size(256)
fn rope_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let half_dim = p.dim / 2u;
    let idx = (wid.x + wid.y * nwg.x) * 256u + lid;
    let pairs = p.rows * p.heads * half_dim;
    if (idx < pairs) {
        let i = idx % half_dim;
        let h = (idx / half_dim) % p.heads;
        let r = idx / (half_dim * p.heads);
        let sc = sincos(f32(seq[0] + r) * inv_freq[i]);
        let b = p.off + r * p.stride + h * p.dim;
        let x1 = f32(x[b + i]);
        let x2 = f32(x[b + i + half_dim]);
        let y1 = T(x1 * sc.y - x2 * sc.x);
        let y2 = T(x2 * sc.y + x1 * sc.x);
        x[b + i] = y1;
        x[b + i + half_dim] = y2;
        let row = seq[0] + r;
        if (h >= p.kv_head0 && row < p.capacity) {
            let cb = row * 2u * p.kv_w + (h - p.kv_head0) * p.dim;
            cache[cb + i] = y1;
            cache[cb + i + half_dim] = y2;
        }
        return;
    }
    // Values: after the q and k heads in the row.
    let j = idx - pairs;
    if (j >= p.rows * p.kv_w) { return; }
    let r = j / p.kv_w;
    let c = j % p.kv_w;
    let row = seq[0] + r;
    if (row < p.capacity) {
        cache[row * 2u * p.kv_w + p.kv_w + c] = x[p.off + r * p.stride + p.heads * p.dim + c];
    }
}
#endif
#endif
