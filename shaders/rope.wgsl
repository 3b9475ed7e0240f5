// Rotary position embedding, rotate-half convention (HF Llama), in place on a row view that
// holds `heads` heads of `dim` each. Row r is at position seq[0] + r: the base position is a
// storage value so a recorded decode step can be replayed at a new position.
// x1 = x[i], x2 = x[i + dim/2], angle = pos * inv_freq[i] in f32 exactly as HF computes it
// (inv_freq comes from the host, computed the same way as HF), then reduced to [-pi, pi]
// before cos/sin: WGSL only bounds cos/sin error inside that range.
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
    _pad2: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: RopeParams;
@group(0) @binding(1) var<storage, read> seq: array<u32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<T>;

// ang - 2*pi*round(ang / 2pi), with 2*pi split in two (Cody-Waite) so the product is exact.
fn reduce_angle(ang: f32) -> f32 {
    let k = round(ang * 0.15915494309189535);
    return (ang - k * 6.28125) - k * 0.0019353071795864769;
}

@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let half_dim = p.dim / 2u;
    let idx = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (idx >= p.rows * p.heads * half_dim) { return; }
    let i = idx % half_dim;
    let h = (idx / half_dim) % p.heads;
    let r = idx / (half_dim * p.heads);
    let pos = f32(seq[0] + r);
    let ang = reduce_angle(pos * inv_freq[i]);
    let c = cos(ang);
    let s = sin(ang);
    let b = p.off + r * p.stride + h * p.dim;
    let x1 = f32(x[b + i]);
    let x2 = f32(x[b + i + half_dim]);
    x[b + i] = T(x1 * c - x2 * s);
    x[b + i + half_dim] = T(x2 * c + x1 * s);
}
