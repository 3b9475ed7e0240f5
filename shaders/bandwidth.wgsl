// Memory-bandwidth probes for bench-ops: the ceilings a WGSL kernel reaches on this adapter
// through wgpu, next to which GEMV is judged. Grid-stride loops over 16-byte elements.

struct BwParams {
    n4: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: BwParams;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

// Reads everything; each invocation writes the XOR of what it read (so nothing is elided).
@compute @workgroup_size(256)
fn read_xor(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tid = (wid.x + wid.y * nwg.x) * 256u + lid;
    let stride = nwg.x * nwg.y * 256u;
    var acc = vec4<u32>(0u);
    for (var i = tid; i < p.n4; i += stride) {
        acc ^= src[i];
    }
    dst[tid] = acc;
}

@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tid = (wid.x + wid.y * nwg.x) * 256u + lid;
    let stride = nwg.x * nwg.y * 256u;
    for (var i = tid; i < p.n4; i += stride) {
        dst[i] = src[i];
    }
}
