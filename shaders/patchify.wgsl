// Non-overlapping patches of a [C, H, W] image as rows: out[py * gw + px, (c, ky, kx)] =
// img[c, py * P + ky, px * P + kx]. With the conv weight flattened to [width, C*P*P] the patch
// embedding (a P x P stride-P convolution) becomes one GEMM.

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

struct PatchParams {
    channels: u32,
    height: u32,
    width: u32,
    psize: u32,
}

@group(0) @binding(0) var<uniform> p: PatchParams;
@group(0) @binding(1) var<storage, read> img: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

@compute @workgroup_size(256)
fn patchify(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    let gw = p.width / p.psize;
    let gh = p.height / p.psize;
    let row_len = p.channels * p.psize * p.psize;
    if (i >= gw * gh * row_len) { return; }
    let r = i / row_len;
    let e = i % row_len;
    let c = e / (p.psize * p.psize);
    let ky = (e / p.psize) % p.psize;
    let kx = e % p.psize;
    let y = (r / gw) * p.psize + ky;
    let x = (r % gw) * p.psize + kx;
    out[i] = T(img[(c * p.height + y) * p.width + x]);
}
