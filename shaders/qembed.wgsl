// Token embeddings from a quantised table (src/quant), one dispatch per row block of the table:
// y[t, c] = deq(table)[ids[t] - row0, c] for the tokens whose id falls in [row0, row0 + part_rows).
// Ids >= vocab get zeros, written by the dispatch of the part holding row 0 (as embedding.wgsl).
// Flags: Q4 (int4 codes, else int8), ZERO (int4 with offsets), F16 (f16 output).

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

struct QEmbedParams {
    n_tok: u32,
    hidden: u32,
    row0: u32,
    part_rows: u32,
    vocab: u32,
    group: u32,
    row_words: u32,
    row_groups: u32,
}

@group(0) @binding(0) var<uniform> p: QEmbedParams;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;

#include qdecode

// deq(table)[r, c] of this part.
fn weight(r: u32, c: u32) -> f32 {
    let g = r * p.row_groups + c / p.group;
#ifdef Q4
    let q = (codes[r * p.row_words + (c >> 3u)] >> ((c & 7u) * 4u)) & 15u;
#ifdef ZERO
    let dm = scale_pair(g);
    return dm.x * f32(q) + dm.y;
#else
    return scale_half(g) * (f32(q) - 8.0);
#endif
#else
    let q = (bitcast<i32>(codes[r * p.row_words + (c >> 2u)]) << (24u - (c & 3u) * 8u)) >> 24u;
    return scale_half(g) * f32(q);
#endif
}

@compute @workgroup_size(256)
fn qgather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = (wid.x + wid.y * nwg.x) * 256u + lid;
    if (e >= p.n_tok * p.hidden) { return; }
    let t = e / p.hidden;
    let c = e % p.hidden;
    let id = ids[t];
    if (id >= p.vocab) {
        if (p.row0 == 0u) { y[e] = T(0.0); }
        return;
    }
    if (id < p.row0 || id - p.row0 >= p.part_rows) { return; }
    y[e] = T(weight(id - p.row0, c));
}
