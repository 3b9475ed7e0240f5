// 2-D convolution (batch 1) as an implicit GEMM, and LayerNorm2d over channels.
//
// conv2d: y[co, p] = bias[co] + sum_k w[co, k] * xcol[k, p], with k = (ci, ky, kx) in PyTorch's
// weight order [Cout, Cin, kh, kw] and p = oy * Wo + ox. A workgroup computes a 64 (channels)
// x 64 (pixels) tile, 4x4 outputs per invocation, staging 16-deep slices of the weights and of
// the gathered input window in workgroup memory. Accumulation is f32.
//
// Flags: F16 (activations x, y are f16), W16 (weights and bias are f16, read as packed u32
// pairs so no SHADER_F16 is needed), BIAS, XTOK (input token-major [H*W, Cin] instead of
// [Cin, H, W]), YTOK (output token-major [Ho*Wo, Cout] instead of [Cout, Ho, Wo]),
// LN2D (the LayerNorm2d kernel instead).

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

#ifdef W16
alias WS = u32;
#else
alias WS = f32;
#endif

// Reads element i of a weight-dtype array (f32, or f16 packed two per u32).
#ifdef W16
fn wload(v: u32, i: u32) -> f32 {
    let h = unpack2x16float(v);
    return select(h.x, h.y, (i & 1u) == 1u);
}
#else
fn wload(v: f32, i: u32) -> f32 {
    return v;
}
#endif

#ifdef W16
fn widx(i: u32) -> u32 {
    return i >> 1u;
}
#else
fn widx(i: u32) -> u32 {
    return i;
}
#endif

// Parameter structs stay outside the #ifdefs so the layout test sees them all.
struct ConvParams {
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    kh: u32,
    kw: u32,
    sh: u32,
    sw: u32,
    ph: u32,
    pw: u32,
    ho: u32,
    wo: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

struct Ln2dParams {
    c: u32,
    hw: u32,
    eps: f32,
    _pad0: u32,
}

#ifndef LN2D
@group(0) @binding(0) var<uniform> p: ConvParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> wt: array<WS>;
#ifdef BIAS
@group(0) @binding(3) var<storage, read> bias: array<WS>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;
#else
@group(0) @binding(3) var<storage, read_write> y: array<T>;
#endif

const TM: u32 = 64u; // output channels per workgroup
const TN: u32 = 64u; // output pixels per workgroup
const TK: u32 = 16u; // reduction slice

var<workgroup> ws: array<f32, 1024>; // [TK][TM]
var<workgroup> xs: array<f32, 1024>; // [TK][TN]

// Input value at channel ci, row iy, column ix (signed: outside the image reads padding 0).
fn xin(ci: u32, iy: i32, ix: i32) -> f32 {
    if (iy < 0 || iy >= i32(p.h) || ix < 0 || ix >= i32(p.w)) {
        return 0.0;
    }
#ifdef XTOK
    return f32(x[(u32(iy) * p.w + u32(ix)) * p.cin + ci]);
#else
    return f32(x[(ci * p.h + u32(iy)) * p.w + u32(ix)]);
#endif
}

@compute @workgroup_size(16, 16)
fn conv2d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let khw = p.kh * p.kw;
    let kt = p.cin * khw;
    let npix = p.ho * p.wo;
    let p0 = wid.x * TN;
    let c0 = wid.y * TM;
    let tx = lid3.x;
    let ty = lid3.y;
    var acc: array<f32, 16>; // [i][j]: channel c0 + ty + 16 i, pixel p0 + tx + 16 j
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < kt; k0 += TK) {
        for (var e = 0u; e < 4u; e++) {
            let idx = lid + 256u * e;
            // Weights: 64 rows (channels) of 16 consecutive k.
            let wr = idx / TK;
            let wc = idx % TK;
            let co = c0 + wr;
            let kw_ = k0 + wc;
            var wv = 0.0;
            if (co < p.cout && kw_ < kt) {
                let i = co * kt + kw_;
                wv = wload(wt[widx(i)], i);
            }
            ws[wc * TM + wr] = wv;
            // Input window: 16 rows (k) of 64 consecutive pixels.
            let xr = idx / TN;
            let xc = idx % TN;
            let kx_ = k0 + xr;
            let pix = p0 + xc;
            var xv = 0.0;
            if (kx_ < kt && pix < npix) {
                let ci = kx_ / khw;
                let r = kx_ % khw;
                let oy = pix / p.wo;
                let ox = pix % p.wo;
                let iy = i32(oy * p.sh + r / p.kw) - i32(p.ph);
                let ix = i32(ox * p.sw + r % p.kw) - i32(p.pw);
                xv = xin(ci, iy, ix);
            }
            xs[xr * TN + xc] = xv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = ws[kk * TM + ty + 16u * i];
                b[i] = xs[kk * TN + tx + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let co = c0 + ty + 16u * i;
        if (co >= p.cout) {
            continue;
        }
#ifdef BIAS
        let bv = wload(bias[widx(co)], co);
#else
        let bv = 0.0;
#endif
        for (var j = 0u; j < 4u; j++) {
            let pix = p0 + tx + 16u * j;
            if (pix >= npix) {
                continue;
            }
#ifdef YTOK
            y[pix * p.cout + co] = T(acc[i * 4u + j] + bv);
#else
            y[co * npix + pix] = T(acc[i * 4u + j] + bv);
#endif
        }
    }
}
#else
// LayerNorm2d (SAM neck): per pixel, normalise over the C channels of a [C, H*W] tensor.
@group(0) @binding(0) var<uniform> p: Ln2dParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> gamma: array<WS>;
@group(0) @binding(3) var<storage, read> beta: array<WS>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;

// One invocation per pixel: neighbouring invocations read neighbouring pixels of a channel.
// Two passes over the channels (mean, then centred variance) for accuracy, a third to write.
@compute @workgroup_size(256)
fn layernorm2d(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let pix = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (pix >= p.hw) {
        return;
    }
    var s = 0.0;
    for (var c = 0u; c < p.c; c++) {
        s += f32(x[c * p.hw + pix]);
    }
    let mean = s / f32(p.c);
    var v = 0.0;
    for (var c = 0u; c < p.c; c++) {
        let d = f32(x[c * p.hw + pix]) - mean;
        v = fma(d, d, v);
    }
    let inv = inverseSqrt(v / f32(p.c) + p.eps);
    for (var c = 0u; c < p.c; c++) {
        let d = f32(x[c * p.hw + pix]) - mean;
        let g = wload(gamma[widx(c)], c);
        let b = wload(beta[widx(c)], c);
        y[c * p.hw + pix] = T(d * inv * g + b);
    }
}
#endif
