// The GEMVs' shared pieces (matmul.wgsl's gemv, qmatmul.wgsl's qgemv): 8 groups of 32 lanes per
// workgroup, CPG weight rows per group; which rows a group takes (GLU: pairs j, p.n + j), and
// the reduction of a group's 32 lanes into its outputs: subgroupAdd (flag SUBGROUPS, only when
// subgroups are exactly 32 wide) or workgroup memory with one barrier. NORM: each group covered
// the whole x row, so the lanes' `sumsq` give the row's RMS. Needs `p` (n, k, eps, x_off,
// x_stride; ROPE: rope_dim, rope_heads, kv_col, kv_cap), `CPG`, `silu_f`, and `finish` (ROPE:
// `sincos`, `seq`, `inv_freq`, `cache` instead).
var<workgroup> partial: array<vec4<f32>, 256>;
#ifdef NORM
var<workgroup> partial_sq: array<f32, 256>;
// Sum of squares of this lane's share of the x row.
var<private> sumsq: f32 = 0.0;
#endif

// Output columns per group (ROPE: pairs of columns).
fn group_cols() -> u32 {
#ifdef GLU
    return CPG / 2u;
#else
#ifdef ROPE
    return CPG / 2u;
#else
    return CPG;
#endif
#endif
}

#ifdef ROPE
// ROPE (with NORM; p.n = column pairs of a q | k | v row): pair j is columns c and c + dim/2 of
// head j / (dim/2), rotated (q's and k's heads) by position seq[0] + m as rope.wgsl does, but
// from the f32 sums; k's and v's columns also go to the KV cache row at that position, so
// neither the rotation nor the append costs a dispatch. Needs `seq`, `inv_freq` and `cache`.
fn rope_col(j: u32) -> u32 {
    let half = p.rope_dim / 2u;
    return (j / half) * p.rope_dim + j % half;
}

fn rope_store(m: u32, j: u32, a: f32, b: f32) {
    let half = p.rope_dim / 2u;
    let c = rope_col(j);
    let pos = seq[0] + m;
    var y1 = a;
    var y2 = b;
    if (c < p.rope_heads * p.rope_dim) {
        let sc = sincos(f32(pos) * inv_freq[j % half]);
        y1 = a * sc.y - b * sc.x;
        y2 = b * sc.y + a * sc.x;
    }
    let v1 = T(y1);
    let v2 = T(y2);
    let yi = p.y_off + m * p.y_stride + c;
    y[yi] = v1;
    y[yi + half] = v2;
    if (c >= p.kv_col && pos < p.kv_cap) {
        // Cache rows hold k | v: the row's columns from kv_col on.
        let ci = pos * (2u * p.n - p.kv_col) + c - p.kv_col;
        cache[ci] = v1;
        cache[ci + half] = v2;
    }
}
#endif

// The weight rows of the group whose first output column is `base`; past-the-end columns
// recompute the last one (uniform control flow) and store nothing.
fn group_rows(base: u32) -> vec4<u32> {
    let nl = p.n - 1u;
#ifdef GLU
    let j0 = min(base, nl);
    let j1 = min(base + 1u, nl);
    return vec4<u32>(j0, p.n + j0, j1, p.n + j1);
#else
#ifdef ROPE
    let half = p.rope_dim / 2u;
    let c0 = rope_col(min(base, nl));
    let c1 = rope_col(min(base + 1u, nl));
    return vec4<u32>(c0, c0 + half, c1, c1 + half);
#else
    return vec4<u32>(min(base, nl), min(base + 1u, nl), min(base + 2u, nl), min(base + 3u, nl));
#endif
#endif
}

// The group's output c (< group_cols()) from its row sums t and the norm's factor.
fn gemv_out(t: vec4<f32>, c: u32, scale: f32) -> f32 {
#ifdef GLU
    return silu_f(t[2u * c] * scale) * (t[2u * c + 1u] * scale);
#else
    return t[c] * scale;
#endif
}

// Where an invocation of a GEMV works: row m of x (workgroup z) starting at xrow, its lane in
// its group of 32, the workgroup's first output column and the group's weight rows.
struct GemvAt {
    m: u32,
    xrow: u32,
    lane: u32,
    block: u32,
    n: vec4<u32>,
}

fn gemv_at(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> GemvAt {
    let cols = group_cols();
    let block = (wid.x + wid.y * nwg.x) * 8u * cols;
    return GemvAt(wid.z, p.x_off + wid.z * p.x_stride, lid % 32u, block, group_rows(block + (lid / 32u) * cols));
}

// Writes output column (ROPE: pair) j of row m from the group's row sums t, its c-th.
fn gemv_store(m: u32, j: u32, t: vec4<f32>, c: u32, scale: f32) {
#ifdef ROPE
    rope_store(m, j, t[2u * c] * scale, t[2u * c + 1u] * scale);
#else
    finish(m, j, gemv_out(t, c, scale));
#endif
}

// Reduces every lane's row sums `s` and writes the workgroup's outputs of row m (its first
// output column is `block`). Called by all 256 invocations.
fn gemv_reduce(m: u32, lid: u32, block: u32, s: vec4<f32>) {
    let cols = group_cols();
#ifdef SUBGROUPS
    let total = subgroupAdd(s);
#ifdef NORM
    let scale = inverseSqrt(subgroupAdd(sumsq) / f32(p.k) + p.eps);
#else
    let scale = 1.0;
#endif
    let base = block + (lid / 32u) * cols;
    if (lid % 32u == 0u) {
        for (var c = 0u; c < cols; c++) {
            if (base + c < p.n) {
                gemv_store(m, base + c, total, c, scale);
            }
        }
    }
#else
    partial[lid] = s;
#ifdef NORM
    partial_sq[lid] = sumsq;
#endif
    workgroupBarrier();
    if (lid < 8u * cols) {
        let gg = lid / cols;
        var total = vec4<f32>(0.0);
        for (var l = 0u; l < 32u; l++) {
            total += partial[gg * 32u + l];
        }
#ifdef NORM
        var sq = 0.0;
        for (var l = 0u; l < 32u; l++) {
            sq += partial_sq[gg * 32u + l];
        }
        let scale = inverseSqrt(sq / f32(p.k) + p.eps);
#else
        let scale = 1.0;
#endif
        if (block + lid < p.n) {
            gemv_store(m, block + lid, total, lid % cols, scale);
        }
    }
#endif
}
