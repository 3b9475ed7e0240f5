// The staged tensor-core GEMMs' shared pieces (matmul_coop_staged.wgsl, qmatmul_coop.wgsl): tile
// shape, the two-stage operand tiles in workgroup memory, the x tile's loads and stores, and the
// epilogue of one 16x16 result. Needs `p` (m, k, x_off, x_stride, n), `x8: array<H8>` and `finish`.
const BM: u32 = 64u;
// BN64: half-width tiles (twice the workgroups, for products too narrow to fill the GPU).
#ifdef BN64
const BN: u32 = 64u;
#else
const BN: u32 = 128u;
#endif
// BK64 (with BN64 only): 64-deep k steps, half the barriers per product.
#ifdef BK64
const BK: u32 = 64u;
#else
const BK: u32 = 32u;
#endif
// Row pitch of the staged tiles in f16: 8 more than BK keeps rows on different banks.
const S: u32 = BK + 8u;
// 16-byte pieces per tile row.
const PR: u32 = BK / 8u;
// The tiles live in vec4<f16> slots (one 8-byte store per 4 values; 2-byte stores were 20%
// slower, run m): the cooperative loads count offsets and strides in slots of SE elements.
const SE: u32 = 4u;
var<workgroup> As: array<vec4<f16>, 2u * BM * S / SE>; // 2 stages x BM x S
var<workgroup> Bs: array<vec4<f16>, 2u * BN * S / SE>; // 2 stages x BN x S
// One 16x16 f32 result per subgroup at a time, row-major, for the epilogue.
var<workgroup> cs: array<f32, 1024>;

// 8 consecutive f16 of a row, loaded as one 16-byte vec4<u32> and converted to f16 only when
// staged (naga's bitcast does not take u32 to f16 vectors, so through f32: exact). Loading them
// as two vec4<f16> instead made every staged GEMM 14-28% slower on the H100 (run t1).
alias H8 = vec4<u32>;

const H8_ZERO = vec4<u32>(0u);

fn lo4(v: H8) -> vec4<f16> {
    return vec4<f16>(vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y)));
}

fn hi4(v: H8) -> vec4<f16> {
    return vec4<f16>(vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w)));
}

// The 16-byte piece `c` (of PR per row, row c / PR) of the x tile at (m0, k0); zero past K.
// Kept as loaded until `put_a`: converting here would wait for the load at once, and the next
// step's loads are meant to fly while this step multiplies.
fn load_a(m0: u32, k0: u32, c: u32) -> H8 {
    let m = min(m0 + c / PR, p.m - 1u);
    let k = k0 + 8u * (c % PR);
    if (k >= p.k) { return H8_ZERO; }
    return x8[(p.x_off + m * p.x_stride + k) / 8u];
}

fn put_a(stage: u32, c: u32, v: H8) {
    let at = (stage * (BM * S) + (c / PR) * S + 8u * (c % PR)) / 4u;
    As[at] = lo4(v);
    As[at + 1u] = hi4(v);
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
