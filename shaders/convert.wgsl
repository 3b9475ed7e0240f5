// Checkpoint dtypes converted on the GPU at load: raw file bytes are uploaded as u32 words and
// turned into the runtime's f32 or f16 here, so the host never holds a converted copy.
// bf16 -> f32 and f16 -> f32 are exact; -> f16 rounds (values beyond f16's range are clamped
// to +-65504 first: WGSL leaves pack2x16float of out-of-range values undefined).

struct ConvertParams {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: ConvertParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

// The i-th 16-bit word of src.
fn half_word(i: u32) -> u32 {
    let w = src[i >> 1u];
    return select(w & 0xffffu, w >> 16u, (i & 1u) == 1u);
}

// Element i of src as f32, for the source dtype selected by the entry point.
fn bf16_at(i: u32) -> f32 {
    return bitcast<f32>(half_word(i) << 16u);
}

fn f32_at(i: u32) -> f32 {
    return bitcast<f32>(src[i]);
}

fn to_f16_pair(a: f32, b: f32) -> u32 {
    return pack2x16float(clamp(vec2<f32>(a, b), vec2<f32>(-65504.0), vec2<f32>(65504.0)));
}

@compute @workgroup_size(256)
fn bf16_to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        dst[i] = half_word(i) << 16u;
    }
}

@compute @workgroup_size(256)
fn f16_to_f32(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i < p.n) {
        let h = unpack2x16float(src[i >> 1u]);
        dst[i] = bitcast<u32>(select(h.x, h.y, (i & 1u) == 1u));
    }
}

// One invocation per output pair; an odd tail pairs with 0.
@compute @workgroup_size(256)
fn bf16_to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = index(wid, nwg, lid);
    let i = 2u * j;
    if (i < p.n) {
        var b = 0.0;
        if (i + 1u < p.n) {
            b = bf16_at(i + 1u);
        }
        dst[j] = to_f16_pair(bf16_at(i), b);
    }
}

@compute @workgroup_size(256)
fn f32_to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = index(wid, nwg, lid);
    let i = 2u * j;
    if (i < p.n) {
        var b = 0.0;
        if (i + 1u < p.n) {
            b = f32_at(i + 1u);
        }
        dst[j] = to_f16_pair(f32_at(i), b);
    }
}
