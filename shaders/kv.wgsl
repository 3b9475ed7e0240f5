// Appends new key/value rows to a KV cache at the position held in `seq` (a storage value, so
// a recorded decode step writes row seq[0] on every replay): cache[seq[0] + r, c] = src[r, c],
// src a row view (src_off + r * src_stride + c).

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

struct KvParams {
    rows: u32,
    cols: u32,
    capacity: u32,
    src_off: u32,
    src_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: KvParams;
@group(0) @binding(1) var<storage, read> seq: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<T>;
@group(0) @binding(3) var<storage, read_write> cache: array<T>;

@compute @workgroup_size(256)
fn kv_write(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= p.rows * p.cols) { return; }
    let r = i / p.cols;
    let row = seq[0] + r;
    // A position past the cache is dropped rather than written out of bounds (the host checks first).
    if (row < p.capacity) {
        cache[row * p.cols + i % p.cols] = src[p.src_off + r * p.src_stride + i % p.cols];
    }
}
