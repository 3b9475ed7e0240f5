// y[m, n_off + n] = epilogue(sum_k x[m, k] * W[n, k] + bias[bias_off + n]) on cooperative
// matrices (tensor cores): f16 x and W, f32 accumulation, 16x16x16 steps. Native only, chosen by
// the host when the adapter has them (Caps::coop16) and the shapes fit: K a multiple of 16,
// M and N at least 16, x rows 16-byte aligned. Same parameters and epilogue as matmul.wgsl.
// A workgroup of 4 subgroups (32 lanes each) computes a 64x64 tile, each subgroup 2x2 tiles of
// 16x16. Edge tiles are shifted back inside the matrix (a tile at row M-16 instead of past M)
// and store only the rows and columns no other tile owns, so every element is written once.
enable wgpu_cooperative_matrix;

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
@group(0) @binding(1) var<storage, read> x: array<f16>;
@group(0) @binding(2) var<storage, read> w: array<f16>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f16>;

#include gelu

// Each subgroup's four 16x16 f32 results, row-major, for the epilogue.
var<workgroup> cs: array<f32, 4096>;

fn finish(m: u32, n: u32, acc: f32) {
    var v = acc;
    if ((p.flags & 1u) != 0u) {
        v += bias[p.bias_off + n];
    }
    if (p.act == 1u) {
        v = gelu_erf_f(v);
    } else if (p.act == 2u) {
        v = gelu_tanh_f(v);
    }
    let i = p.y_off + m * p.y_stride + p.n_off + n;
    if ((p.flags & 2u) != 0u) {
        v += f32(y[i]);
    }
    y[i] = f16(v);
}

@compute @workgroup_size(128)
fn gemm_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_id) sid: u32, @builtin(subgroup_invocation_id) lane: u32) {
    // Nominal tile starts of this subgroup, and the starts actually computed (shifted inside).
    let ms = wid.y * 64u + (sid / 2u) * 32u;
    let ns = wid.x * 64u + (sid % 2u) * 32u;
    let ma0 = min(ms, p.m - 16u);
    let ma1 = min(ms + 16u, p.m - 16u);
    let nb0 = min(ns, p.n - 16u);
    let nb1 = min(ns + 16u, p.n - 16u);
    var c00: coop_mat16x16<f32, C>;
    var c01: coop_mat16x16<f32, C>;
    var c10: coop_mat16x16<f32, C>;
    var c11: coop_mat16x16<f32, C>;
    let xa0 = p.x_off + ma0 * p.x_stride;
    let xa1 = p.x_off + ma1 * p.x_stride;
    let wb0 = nb0 * p.k;
    let wb1 = nb1 * p.k;
    for (var k0 = 0u; k0 < p.k; k0 += 16u) {
        // A: 16 rows of x, row-major. B = W^T: W's rows are B's columns (column-major, stride K).
        let a0 = coopLoadT<coop_mat16x16<f16, A>>(&x[xa0 + k0], p.x_stride);
        let a1 = coopLoadT<coop_mat16x16<f16, A>>(&x[xa1 + k0], p.x_stride);
        let b0 = coopLoad<coop_mat16x16<f16, B>>(&w[wb0 + k0], p.k);
        let b1 = coopLoad<coop_mat16x16<f16, B>>(&w[wb1 + k0], p.k);
        c00 = coopMultiplyAdd(a0, b0, c00);
        c01 = coopMultiplyAdd(a0, b1, c01);
        c10 = coopMultiplyAdd(a1, b0, c10);
        c11 = coopMultiplyAdd(a1, b1, c11);
    }
    let base = sid * 1024u;
    coopStoreT(c00, &cs[base], 16u);
    coopStoreT(c01, &cs[base + 256u], 16u);
    coopStoreT(c10, &cs[base + 512u], 16u);
    coopStoreT(c11, &cs[base + 768u], 16u);
    workgroupBarrier();
    for (var e = lane; e < 1024u; e += 32u) {
        let t = e / 256u;
        let r = (e % 256u) / 16u;
        let c = e % 16u;
        let i = t / 2u;
        let j = t % 2u;
        let m = select(ma0, ma1, i == 1u) + r;
        let n = select(nb0, nb1, j == 1u) + c;
        if (m >= ms + 16u * i && m < p.m && n >= ns + 16u * j && n < p.n) {
            finish(m, n, cs[base + e]);
        }
    }
}
