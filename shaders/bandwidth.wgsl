// Memory-bandwidth probes for bench-ops: the ceilings a WGSL kernel reaches on this adapter
// through wgpu, next to which GEMV is judged. Grid-stride loops over 16-byte elements.

struct BwParams {
    n4: u32,
    // read_rows: 16-byte elements per row
    row4: u32,
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
    // Four independent loads per step keep more bytes in flight per invocation.
    var i = tid;
    for (; i + 3u * stride < p.n4; i += 4u * stride) {
        let a = src[i];
        let b = src[i + stride];
        let c = src[i + 2u * stride];
        let d = src[i + 3u * stride];
        acc ^= (a ^ b) ^ (c ^ d);
    }
    for (; i < p.n4; i += stride) {
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

// GEMV's access pattern without its arithmetic: 8 groups of 32 lanes per workgroup, each
// group reading RPG whole rows, lanes striding 16 bytes apart along the row.
override RPG: u32 = 1u;

@compute @workgroup_size(256)
fn read_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = lid / 32u;
    let lane = lid % 32u;
    let rows = p.n4 / p.row4;
    let r0 = ((wid.x + wid.y * nwg.x) * 8u + g) * RPG;
    var acc = vec4<u32>(0u);
    for (var c = lane; c < p.row4; c += 32u) {
        for (var r = 0u; r < RPG; r++) {
            let row = min(r0 + r, rows - 1u);
            acc ^= src[row * p.row4 + c];
        }
    }
    dst[(wid.x + wid.y * nwg.x) * 256u + lid] = acc;
}
