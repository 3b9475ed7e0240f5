// The staged tensor-core GEMMs' shared pieces (matmul_coop_staged.wgsl, qmatmul_coop.wgsl): tile
// shape, the two-stage operand tiles in workgroup memory, the x tile's loads and stores, and the
// epilogue of one 16x16 result. Needs `p` (m, k, x_off, x_stride, n), `x8` and `finish`.
const BM: u32 = 64u;
const BN: u32 = 128u;
const BK: u32 = 32u;
// Row pitch of the staged tiles in f16: 8 more than BK keeps rows on different banks.
const S: u32 = 40u;
#ifdef SMEM4
// The tiles as vec4<f16> slots: one 8-byte store per 4 values instead of 4 2-byte ones (the
// cooperative loads count offsets and strides in slots of SE elements).
const SE: u32 = 4u;
var<workgroup> As: array<vec4<f16>, 1280>; // 2 stages x BM x S / 4
var<workgroup> Bs: array<vec4<f16>, 2560>; // 2 stages x BN x S / 4
#else
const SE: u32 = 1u;
var<workgroup> As: array<f16, 5120>; // 2 stages x BM x S
var<workgroup> Bs: array<f16, 10240>; // 2 stages x BN x S
#endif
// One 16x16 f32 result per subgroup at a time, row-major, for the epilogue.
var<workgroup> cs: array<f32, 1024>;

// The 16-byte piece `c` (of BK/8 per row, row c / 4) of the x tile at (m0, k0); zero past K.
fn load_a(m0: u32, k0: u32, c: u32) -> vec4<u32> {
    let m = min(m0 + c / 4u, p.m - 1u);
    let k = k0 + 8u * (c % 4u);
    if (k >= p.k) { return vec4<u32>(0u); }
    return x8[(p.x_off + m * p.x_stride + k) / 8u];
}

fn put_a(stage: u32, c: u32, v: vec4<u32>) {
    let at = stage * (BM * S) + (c / 4u) * S + 8u * (c % 4u);
#ifdef SMEM4
    // (naga's bitcast does not take vec2<u32> to vec4<f16>; the f32 round trip is exact.)
    As[at / 4u] = vec4<f16>(vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)));
    As[at / 4u + 1u] = vec4<f16>(vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)));
#else
    // f16 pairs through f32 (exact: every f16 is an f32).
    let h0 = vec2<f16>(unpack2x16float(v.x));
    let h1 = vec2<f16>(unpack2x16float(v.y));
    let h2 = vec2<f16>(unpack2x16float(v.z));
    let h3 = vec2<f16>(unpack2x16float(v.w));
    As[at] = h0.x; As[at + 1u] = h0.y; As[at + 2u] = h1.x; As[at + 3u] = h1.y;
    As[at + 4u] = h2.x; As[at + 5u] = h2.y; As[at + 6u] = h3.x; As[at + 7u] = h3.y;
#endif
}

// Writes one subgroup's 16x16 tile at (mc, nc), the parts inside the matrix.
fn emit(c: coop_mat16x16<f32, C>, sid: u32, lane: u32, mc: u32, nc: u32) {
    coopStoreT(c, &cs[sid * 256u], 16u);
    workgroupBarrier();
    for (var e = lane; e < 256u; e += 32u) {
        let m = mc + e / 16u;
        let n = nc + e % 16u;
        if (m < p.m && n < p.n) {
            finish(m, n, cs[sid * 256u + e]);
        }
    }
    workgroupBarrier();
}

