// SAM's window partition and its inverse on token rows [H*W, C] (a row-major grid). The grid
// is zero-padded to nh x nw windows of win x win; window rows are ordered window by window
// (row-major over windows), row-major inside each window. `x` is a row view (x_off, x_stride);
// the windowed side `y` is contiguous [nh*nw*win*win, C]. One thread per element written:
// `window_partition` fills every row of y (padding with zeros); `window_unpartition` (flag
// UNPART) fills x and drops the padding. Flag F16 for f16 activations.

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

struct WindowParams {
    h: u32,
    w: u32,
    win: u32,
    nw: u32,
    c: u32,
    x_off: u32,
    x_stride: u32,
    n: u32,
}

@group(0) @binding(0) var<uniform> p: WindowParams;
#ifdef UNPART
@group(0) @binding(1) var<storage, read> y: array<T>;
@group(0) @binding(2) var<storage, read_write> x: array<T>;
#else
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> y: array<T>;
#endif

#ifdef UNPART
@compute @workgroup_size(256)
fn window_unpartition(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let r = i / p.c;
    let c = i % p.c;
    let gy = r / p.w;
    let gx = r % p.w;
    let wr = ((gy / p.win) * p.nw + gx / p.win) * p.win * p.win + (gy % p.win) * p.win + gx % p.win;
    x[p.x_off + r * p.x_stride + c] = y[wr * p.c + c];
}
#else
@compute @workgroup_size(256)
fn window_partition(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let r = i / p.c;
    let c = i % p.c;
    let ww = p.win * p.win;
    let wi = r / ww;
    let inner = r % ww;
    let gy = (wi / p.nw) * p.win + inner / p.win;
    let gx = (wi % p.nw) * p.win + inner % p.win;
    var val = T(0.0);
    if (gy < p.h && gx < p.w) {
        val = x[p.x_off + (gy * p.w + gx) * p.x_stride + c];
    }
    y[i] = val;
}
#endif
