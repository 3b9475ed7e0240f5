// Token embedding gather from one row block of the table, and splicing of image rows.
//
// gather (one dispatch per table part): y[t, c] = table[ids[t] - row0, c] for the tokens whose
// id falls in [row0, row0 + part_rows). Ids >= vocab get zeros, written by the dispatch of the
// part holding row 0. The table is f32, or (flag TABLE_F16) f16 read as packed u32 halves with
// unpack2x16float, so f16 weights need no SHADER_F16. Output: f32, or f16 with flag F16.
//
// splice (flag SPLICE): y[positions[i], c] = img[i, c] for i < n_img; positions >= n_tok are skipped.

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

struct EmbedParams {
    n_tok: u32,
    hidden: u32,
    row0: u32,
    part_rows: u32,
    vocab: u32,
    n_img: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: EmbedParams;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

#ifdef SPLICE
@group(0) @binding(1) var<storage, read> img: array<T>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;

@compute @workgroup_size(256)
fn splice(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = linear_id(wid, nwg, lid);
    if (e >= p.n_img * p.hidden) { return; }
    let i = e / p.hidden;
    let c = e % p.hidden;
    let pos = positions[i];
    if (pos >= p.n_tok) { return; }
    y[pos * p.hidden + c] = img[e];
}
#else
@group(0) @binding(1) var<storage, read> ids: array<u32>;
#ifdef TABLE_F16
@group(0) @binding(2) var<storage, read> table: array<u32>;
#else
@group(0) @binding(2) var<storage, read> table: array<f32>;
#endif
@group(0) @binding(3) var<storage, read_write> y: array<T>;

fn table_at(i: u32) -> f32 {
#ifdef TABLE_F16
    let pair = unpack2x16float(table[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
#else
    return table[i];
#endif
}

@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = linear_id(wid, nwg, lid);
    if (e >= p.n_tok * p.hidden) { return; }
    let t = e / p.hidden;
    let c = e % p.hidden;
    let id = ids[t];
    if (id >= p.vocab) {
        if (p.row0 == 0u) { y[e] = T(0.0); }
        return;
    }
    if (id < p.row0 || id - p.row0 >= p.part_rows) { return; }
    y[e] = T(table_at((id - p.row0) * p.hidden + c));
}
#endif
