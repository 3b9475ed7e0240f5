// Numerically stable softmax over each row (max-subtracted), one workgroup per row, in place.

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

struct SoftmaxParams {
    rows: u32,
    cols: u32,
    off: u32,
    stride: u32,
}

@group(0) @binding(0) var<uniform> p: SoftmaxParams;
@group(0) @binding(1) var<storage, read_write> x: array<T>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) { return; }
    let b = p.off + r * p.stride;
    var mx = -3.4028234e38;
    for (var c = lid; c < p.cols; c += 256u) {
        mx = max(mx, f32(x[b + c]));
    }
    red[lid] = mx;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    mx = red[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var c = lid; c < p.cols; c += 256u) {
        sum += exp(f32(x[b + c]) - mx);
    }
    red[lid] = sum;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / red[0];
    for (var c = lid; c < p.cols; c += 256u) {
        x[b + c] = T(exp(f32(x[b + c]) - mx) * inv);
    }
}
