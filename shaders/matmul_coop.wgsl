// y[m, n_off + n] = epilogue(sum_k x[m, k] * W[n, k] + bias[bias_off + n]) on cooperative
// matrices (tensor cores): f16 x and W, f32 accumulation, 16x16x16 steps. Native only, chosen by
// the host when the adapter has them (Caps::coop16) and the shapes fit: K a multiple of 16,
// M and N at least 16, x rows 16-byte aligned. Same parameters and epilogue as matmul.wgsl.
// A workgroup of 4 subgroups (32 lanes each) computes a 64 x 32*NT tile, each subgroup 2 x NT
// tiles of 16x16. Edge tiles are shifted back inside the matrix (a tile at row M-16 instead of past M)
// and store only the rows and columns no other tile owns, so every element is written once.
enable wgpu_cooperative_matrix;

alias T = f16;

#include matmul_params

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> x: array<f16>;
@group(0) @binding(2) var<storage, read> w: array<f16>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f16>;

#include gelu
#include epilogue

// One 16x16 f32 result per subgroup at a time, row-major, for the epilogue.
var<workgroup> cs: array<f32, 1024>;


// Tiles per subgroup along N (2 or 4) and 16-deep k steps per loop iteration (1 or 2). Keep this
// loop's shape: the same loop written as a plain `for k in 0..K step 16` measured 20% slower at
// 620x2048x5632 on the H200 (0.586 against 0.481 ms).
override NT: u32 = 4u;
override KU: u32 = 1u;

// Writes one subgroup's tile computed at (mc, nc) whose own rows and columns start at (ms, ns):
// rows and columns before those belong to the neighbouring tile and are skipped.
fn emit(c: coop_mat16x16<f32, C>, sid: u32, lane: u32, mc: u32, ms: u32, nc: u32, ns: u32) {
    coopStoreT(c, &cs[sid * 256u], 16u);
    workgroupBarrier();
    for (var e = lane; e < 256u; e += 32u) {
        let m = mc + e / 16u;
        let n = nc + e % 16u;
        if (m >= ms && m < p.m && n >= ns && n < p.n) {
            finish(m, n, cs[sid * 256u + e]);
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(128)
fn gemm_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_id) sid: u32, @builtin(subgroup_invocation_id) lane: u32) {
    // Nominal tile starts of this subgroup (2 x NT tiles of 16x16), and the starts actually
    // computed (shifted back inside the matrix).
    let ms = wid.y * 64u + (sid / 2u) * 32u;
    let ns = wid.x * (32u * NT) + (sid % 2u) * (16u * NT);
    let m0 = min(ms, p.m - 16u);
    let m1 = min(ms + 16u, p.m - 16u);
    let n0 = min(ns, p.n - 16u);
    let n1 = min(ns + 16u, p.n - 16u);
    let n2 = min(ns + 32u, p.n - 16u);
    let n3 = min(ns + 48u, p.n - 16u);
    var c00: coop_mat16x16<f32, C>;
    var c01: coop_mat16x16<f32, C>;
    var c02: coop_mat16x16<f32, C>;
    var c03: coop_mat16x16<f32, C>;
    var c10: coop_mat16x16<f32, C>;
    var c11: coop_mat16x16<f32, C>;
    var c12: coop_mat16x16<f32, C>;
    var c13: coop_mat16x16<f32, C>;
    let xa0 = p.x_off + m0 * p.x_stride;
    let xa1 = p.x_off + m1 * p.x_stride;
    // A: 16 rows of x, row-major. B = W^T: W's rows are B's columns (column-major, stride K).
    var k0 = 0u;
    for (; k0 + 16u * (KU - 1u) < p.k; k0 += 16u * KU) {
        for (var u = 0u; u < KU; u++) {
            let k = k0 + 16u * u;
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&x[xa0 + k], p.x_stride);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&x[xa1 + k], p.x_stride);
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&w[n0 * p.k + k], p.k);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&w[n1 * p.k + k], p.k);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            if (NT > 2u) {
                let b2 = coopLoad<coop_mat16x16<f16, B>>(&w[n2 * p.k + k], p.k);
                let b3 = coopLoad<coop_mat16x16<f16, B>>(&w[n3 * p.k + k], p.k);
                c02 = coopMultiplyAdd(a0, b2, c02);
                c03 = coopMultiplyAdd(a0, b3, c03);
                c12 = coopMultiplyAdd(a1, b2, c12);
                c13 = coopMultiplyAdd(a1, b3, c13);
            }
        }
    }
    // K = 16 (mod 32) with KU = 2: one step left (a condition on uniforms, as coop ops need).
    if (p.k % (16u * KU) != 0u) {
        let k0 = p.k - 16u;
        let a0 = coopLoadT<coop_mat16x16<f16, A>>(&x[xa0 + k0], p.x_stride);
        let a1 = coopLoadT<coop_mat16x16<f16, A>>(&x[xa1 + k0], p.x_stride);
        let b0 = coopLoad<coop_mat16x16<f16, B>>(&w[n0 * p.k + k0], p.k);
        let b1 = coopLoad<coop_mat16x16<f16, B>>(&w[n1 * p.k + k0], p.k);
        c00 = coopMultiplyAdd(a0, b0, c00);
        c01 = coopMultiplyAdd(a0, b1, c01);
        c10 = coopMultiplyAdd(a1, b0, c10);
        c11 = coopMultiplyAdd(a1, b1, c11);
        if (NT > 2u) {
            let b2 = coopLoad<coop_mat16x16<f16, B>>(&w[n2 * p.k + k0], p.k);
            let b3 = coopLoad<coop_mat16x16<f16, B>>(&w[n3 * p.k + k0], p.k);
            c02 = coopMultiplyAdd(a0, b2, c02);
            c03 = coopMultiplyAdd(a0, b3, c03);
            c12 = coopMultiplyAdd(a1, b2, c12);
            c13 = coopMultiplyAdd(a1, b3, c13);
        }
    }
    emit(c00, sid, lane, m0, ms, n0, ns);
    emit(c01, sid, lane, m0, ms, n1, ns + 16u);
    emit(c10, sid, lane, m1, ms + 16u, n0, ns);
    emit(c11, sid, lane, m1, ms + 16u, n1, ns + 16u);
    if (NT > 2u) {
        emit(c02, sid, lane, m0, ms, n2, ns + 32u);
        emit(c03, sid, lane, m0, ms, n3, ns + 48u);
        emit(c12, sid, lane, m1, ms + 16u, n2, ns + 32u);
        emit(c13, sid, lane, m1, ms + 16u, n3, ns + 48u);
    }
}
