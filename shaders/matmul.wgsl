// y[m, n_off + n] = epilogue(sum_k x[m, k] * W[n, k] + bias[bias_off + n]) with PyTorch's [out, in]
// weight layout. `gemm`: 128x128 tiles for many rows; `gemv`: one workgroup per 8 output
// columns for a few rows (decode). Flags: F16 (f16 activations, needs SHADER_F16), W_F16 (f16
// weights read as packed u32 pairs: works on every adapter), VEC (gemv with 16-byte loads; the
// host picks it when K and the offsets are multiples of 8). Accumulation is always f32.

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    x_off: u32,
    x_stride: u32,
    y_off: u32,
    y_stride: u32,
    n_off: u32,
    bias_off: u32,
    // bit 0: add bias; bit 1: add the previous y (residual)
    flags: u32,
    // 0: none, 1: GELU (erf), 2: GELU (tanh)
    act: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: MatmulParams;
#ifdef VEC
@group(0) @binding(1) var<storage, read> x4: array<vec4<T>>;
#ifdef W_F16
@group(0) @binding(2) var<storage, read> w4: array<vec4<u32>>;
#else
@group(0) @binding(2) var<storage, read> w4: array<vec4<f32>>;
#endif
#else
@group(0) @binding(1) var<storage, read> x: array<T>;
#ifdef W_F16
@group(0) @binding(2) var<storage, read> w: array<u32>;
#else
@group(0) @binding(2) var<storage, read> w: array<f32>;
#endif
#endif
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;

fn erf_f32(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}

fn finish(m: u32, n: u32, acc: f32) {
    var v = acc;
    if ((p.flags & 1u) != 0u) {
        v += bias[p.bias_off + n];
    }
    if (p.act == 1u) {
        v = 0.5 * v * (1.0 + erf_f32(v * 0.70710678118654752));
    } else if (p.act == 2u) {
        let u = clamp(0.79788456080286536 * (v + 0.044715 * v * v * v), -15.0, 15.0);
        v = 0.5 * v * (1.0 + tanh(u));
    }
    let i = p.y_off + m * p.y_stride + p.n_off + n;
    if ((p.flags & 2u) != 0u) {
        v += f32(y[i]);
    }
    y[i] = T(v);
}

#ifndef VEC
#ifdef W_F16
fn w_at(i: u32) -> f32 {
    let h = unpack2x16float(w[i >> 1u]);
    return select(h.x, h.y, (i & 1u) == 1u);
}
#else
fn w_at(i: u32) -> f32 {
    return w[i];
}
#endif

// ---- tiled GEMM: 256 invocations, 128x128 output tile, 8x8 per invocation ----
const BM: u32 = 128u;
const BN: u32 = 128u;
const BK: u32 = 8u;
var<workgroup> As: array<array<f32, BM>, BK>;
var<workgroup> Bs: array<array<f32, BN>, BK>;

@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m0 = wid.y * BM;
    let n0 = wid.x * BN;
    let tx = lid % 16u;
    let ty = lid / 16u;
    // Loader: each invocation fetches 4 consecutive k of one row of x and of W per step.
    let lr = lid >> 1u;
    let lk = (lid & 1u) * 4u;
    var acc: array<array<f32, 8>, 8>;
    for (var i = 0u; i < 8u; i++) {
        for (var j = 0u; j < 8u; j++) {
            acc[i][j] = 0.0;
        }
    }
    let am = m0 + lr;
    let bn = n0 + lr;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var i = 0u; i < 4u; i++) {
            let k = k0 + lk + i;
            var av = 0.0;
            if (am < p.m && k < p.k) {
                av = f32(x[p.x_off + am * p.x_stride + k]);
            }
            As[lk + i][lr] = av;
            var bv = 0.0;
            if (bn < p.n && k < p.k) {
                bv = w_at(bn * p.k + k);
            }
            Bs[lk + i][lr] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<f32, 8>;
            var b: array<f32, 8>;
            // Strided micro-tile: neighbouring invocations read neighbouring words (no bank conflicts).
            for (var i = 0u; i < 8u; i++) {
                a[i] = As[kk][ty + 16u * i];
                b[i] = Bs[kk][tx + 16u * i];
            }
            for (var i = 0u; i < 8u; i++) {
                for (var j = 0u; j < 8u; j++) {
                    acc[i][j] = fma(a[i], b[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 8u; i++) {
        let m = m0 + ty + 16u * i;
        if (m >= p.m) { continue; }
        for (var j = 0u; j < 8u; j++) {
            let n = n0 + tx + 16u * j;
            if (n < p.n) {
                finish(m, n, acc[i][j]);
            }
        }
    }
}
#endif

// ---- GEMV: 256 invocations = 8 output columns x 32 lanes; up to 8 rows of x ----
const GV_ROWS: u32 = 8u;
var<workgroup> partial: array<array<f32, 256>, GV_ROWS>;

#ifdef VEC
// 8 consecutive k per lane per step: x as two vec4, W as one vec4<u32> (f16) or two vec4<f32>.
fn dot8(m: u32, n: u32, k: u32) -> f32 {
    let xi = (p.x_off + m * p.x_stride + k) >> 2u;
    let xa = vec4<f32>(x4[xi]);
    let xb = vec4<f32>(x4[xi + 1u]);
#ifdef W_F16
    let q = w4[(n * p.k + k) >> 3u];
    let wa = vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
    let wb = vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w));
#else
    let wi = (n * p.k + k) >> 2u;
    let wa = w4[wi];
    let wb = w4[wi + 1u];
#endif
    return dot(xa, wa) + dot(xb, wb);
}
#endif

@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let col = lid / 32u;
    let lane = lid % 32u;
    let n = (wid.x + wid.y * nwg.x) * 8u + col;
    var acc: array<f32, GV_ROWS>;
    for (var r = 0u; r < GV_ROWS; r++) {
        acc[r] = 0.0;
    }
    if (n < p.n) {
#ifdef VEC
        for (var k = lane * 8u; k < p.k; k += 256u) {
            for (var r = 0u; r < GV_ROWS; r++) {
                if (r < p.m) {
                    acc[r] += dot8(r, n, k);
                }
            }
        }
#else
        for (var k = lane; k < p.k; k += 32u) {
            let wv = w_at(n * p.k + k);
            for (var r = 0u; r < GV_ROWS; r++) {
                if (r < p.m) {
                    acc[r] = fma(f32(x[p.x_off + r * p.x_stride + k]), wv, acc[r]);
                }
            }
        }
#endif
    }
    for (var r = 0u; r < GV_ROWS; r++) {
        partial[r][lid] = acc[r];
    }
    workgroupBarrier();
    // Tree reduction over the 32 lanes of each column.
    for (var s = 16u; s > 0u; s >>= 1u) {
        if (lane < s) {
            for (var r = 0u; r < GV_ROWS; r++) {
                partial[r][lid] += partial[r][lid + s];
            }
        }
        workgroupBarrier();
    }
    if (lane < p.m && n < p.n) {
        finish(lane, n, partial[lane][col * 32u]);
    }
}
