// Convolution input as rows (im2col), so a k x k convolution runs as one GEMM against its
// weight flattened to [Cout, Cin*k*k]: out[oy * wo + ox, (c, ky, kx)] = in(oy*s + ky - pad,
// ox*s + kx - pad, c), zero outside the input. x is token-major [H*W, C]. With UPSAMPLE the
// convolution's input is x bilinearly resized to (ch, cw) (align_corners False: source
// coordinate (dst + 0.5) * scale - 0.5, clamped below at 0, the second tap clamped to the
// edge), sampled on the fly instead of stored. One thread per (output row, channel): its k*k
// taps; neighbouring threads read neighbouring channels.

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

struct Im2colParams {
    c: u32,
    h: u32,
    w: u32,
    k: u32,
    stride: u32,
    pad: u32,
    ch: u32,
    cw: u32,
    ho: u32,
    wo: u32,
    scale_h: f32,
    scale_w: f32,
}

@group(0) @binding(0) var<uniform> p: Im2colParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;

fn tap(iy: u32, ix: u32, c: u32) -> f32 {
#ifdef UPSAMPLE
    let sy = max((f32(iy) + 0.5) * p.scale_h - 0.5, 0.0);
    let sx = max((f32(ix) + 0.5) * p.scale_w - 0.5, 0.0);
    let y0 = min(u32(sy), p.h - 1u);
    let x0 = min(u32(sx), p.w - 1u);
    let y1 = min(y0 + 1u, p.h - 1u);
    let x1 = min(x0 + 1u, p.w - 1u);
    let fy = sy - f32(y0);
    let fx = sx - f32(x0);
    let a = f32(x[(y0 * p.w + x0) * p.c + c]) * (1.0 - fx) + f32(x[(y0 * p.w + x1) * p.c + c]) * fx;
    let b = f32(x[(y1 * p.w + x0) * p.c + c]) * (1.0 - fx) + f32(x[(y1 * p.w + x1) * p.c + c]) * fx;
    return a * (1.0 - fy) + b * fy;
#else
    return f32(x[(iy * p.w + ix) * p.c + c]);
#endif
}

@compute @workgroup_size(256)
fn im2col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (i >= p.ho * p.wo * p.c) { return; }
    let r = i / p.c;
    let c = i % p.c;
    let oy = r / p.wo;
    let ox = r % p.wo;
    let kk = p.k * p.k;
    let ob = r * p.c * kk + c * kk;
    for (var ky = 0u; ky < p.k; ky++) {
        for (var kx = 0u; kx < p.k; kx++) {
            // Unsigned: a coordinate left of or above the input wraps past its size.
            let iy = oy * p.stride + ky - p.pad;
            let ix = ox * p.stride + kx - p.pad;
            var val = 0.0;
            if (iy < p.ch && ix < p.cw) {
                val = tap(iy, ix, c);
            }
            out[ob + ky * p.k + kx] = T(val);
        }
    }
}
