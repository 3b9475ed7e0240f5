// Per-channel affine map of a planar [C, plane] f32 tensor (C <= 4): y = x * scale[c] + shift[c].
// Image preprocessing's x / 255 then (x - mean) / std, folded to one multiply-add per value.

struct NormaliseParams {
    n: u32,
    plane: u32,
    _pad0: u32,
    _pad1: u32,
    scale0: f32,
    scale1: f32,
    scale2: f32,
    scale3: f32,
    shift0: f32,
    shift1: f32,
    shift2: f32,
    shift3: f32,
}

@group(0) @binding(0) var<uniform> p: NormaliseParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn normalise(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= p.n) { return; }
    let c = i / p.plane;
    let scale = array<f32, 4>(p.scale0, p.scale1, p.scale2, p.scale3);
    let shift = array<f32, 4>(p.shift0, p.shift1, p.shift2, p.shift3);
    y[i] = fma(x[i], scale[c], shift[c]);
}
