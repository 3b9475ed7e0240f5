// y[m, n_off + n] = epilogue(sum_k x[m, k] * W[n, k] + bias[bias_off + n]) on cooperative
// matrices, with the operand tiles staged through workgroup memory: each 32-deep k step, the
// 128 threads copy a 64 x 32 tile of x and a 128 x 32 tile of W with 16-byte loads (coalesced:
// consecutive threads take consecutive 16-byte pieces of a row), and the 4 subgroups read their
// 16x16 operands from there, in two stages (coop_main.wgsl, the loop this kernel shares with
// qmatmul_coop.wgsl). Rows past M or N repeat the last row (their results are not stored); k
// past K reads zeros.
// Same parameters and epilogue as matmul.wgsl; f16 x and W (16-byte aligned rows), f32 sums.
// Flags (coop_stage.wgsl): BN64 (64 x 64 tiles), BK64 (with BN64: 64-deep steps, each thread
// copying 4 pieces of each tile; 40 KiB of workgroup memory), PIPE2 (coop_main.wgsl: loads two
// steps ahead).
enable wgpu_cooperative_matrix;

alias T = f16;

#include matmul_params

@group(0) @binding(0) var<uniform> p: MatmulParams;
@group(0) @binding(1) var<storage, read> x8: array<H8>;
@group(0) @binding(2) var<storage, read> w8: array<H8>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f16>;

#include gelu
#include epilogue

#include coop_stage

// The 16-byte piece `c` (row c / 4) of the W tile at (n0, k0); zero past K.
fn load_b(n0: u32, k0: u32, c: u32) -> H8 {
    let n = min(n0 + c / PR, p.n - 1u);
    let k = k0 + 8u * (c % PR);
    if (k >= p.k) { return H8_ZERO; }
    return w8[(n * p.k + k) / 8u];
}

fn put_b(stage: u32, c: u32, v: H8) {
    let at = (stage * (BN * S) + (c / PR) * S + 8u * (c % PR)) / 4u;
    Bs[at] = lo4(v);
    Bs[at + 1u] = hi4(v);
}

// Thread t's share of one k step's tiles: x pieces t + 128 i (2; BK64: 4) and W pieces
// t + 128 i (2 with BN64, else 4; BK64: 4). Unused fields stay zero and cost nothing.
struct Pieces {
    a0: H8, a1: H8, a2: H8, a3: H8,
    b0: H8, b1: H8, b2: H8, b3: H8,
}

fn load_step(m0: u32, n0: u32, k0: u32, t: u32) -> Pieces {
    var r = Pieces(H8_ZERO, H8_ZERO, H8_ZERO, H8_ZERO, H8_ZERO, H8_ZERO, H8_ZERO, H8_ZERO);
    r.a0 = load_a(m0, k0, t);
    r.a1 = load_a(m0, k0, t + 128u);
    r.b0 = load_b(n0, k0, t);
    r.b1 = load_b(n0, k0, t + 128u);
    if (BM * PR > 256u) {
        r.a2 = load_a(m0, k0, t + 256u);
        r.a3 = load_a(m0, k0, t + 384u);
    }
    if (BN * PR > 256u) {
        r.b2 = load_b(n0, k0, t + 256u);
        r.b3 = load_b(n0, k0, t + 384u);
    }
    return r;
}

fn put_step(stage: u32, t: u32, r: Pieces) {
    put_a(stage, t, r.a0);
    put_a(stage, t + 128u, r.a1);
    put_b(stage, t, r.b0);
    put_b(stage, t + 128u, r.b1);
    if (BM * PR > 256u) {
        put_a(stage, t + 256u, r.a2);
        put_a(stage, t + 384u, r.a3);
    }
    if (BN * PR > 256u) {
        put_b(stage, t + 256u, r.b2);
        put_b(stage, t + 384u, r.b3);
    }
}

@compute @workgroup_size(128)
fn gemm_coop_staged(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32, @builtin(subgroup_id) sid: u32, @builtin(subgroup_invocation_id) lane: u32) {
#include coop_main
}
