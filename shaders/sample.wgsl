// Token selection on the GPU: the chosen id goes to a U32 tensor, logits are never read back.
//
// Sections (one preprocessor flag each, so every entry point declares only its own bindings):
//   PENALTY      penalty_copy / penalty_apply: repetition penalty into a copy of the logits.
//   ARGMAX       argmax_partial: best (value, index) per 1024-element chunk, optionally of
//                logits * inv_temp + Gumbel noise (exact sampling from softmax(logits / T)).
//   ARGMAX_FINAL argmax_final: best over the chunk results; writes the token.
//   TOPK_FIRST   topk_first: each workgroup bitonic-sorts sort_n logits, keeps its top `keep`
//                and writes the chunk's softmax partials (max, sum exp((l - max) * inv_temp)).
//   TOPK_MERGE   topk_merge: same on (value, index) candidate pairs from the previous stage.
//   TOPK_DRAW    topk_draw: softmax over the final candidates with the full-vocabulary
//                normaliser, top-p cutoff, one draw.
//   ADVANCE      advance: appends the token to the history, bumps the count (and the step).
//
// Random numbers: a counter-based hash of (seed, step, index); `seed` is a parameter, `step`
// a U32 storage tensor rewritten between replays of a recorded list.
// Order: value descending, then index ascending (so ties go to the first index).

struct SampleParams {
    n: u32,
    inv_temp: f32,
    seed: u32,
    gumbel: u32,
    sort_n: u32,
    keep: u32,
    n_chunks: u32,
    n_cand: u32,
    top_p: f32,
    penalty: f32,
    cap: u32,
    out_off: u32,
    norm_topk: u32,
    bump_step: u32,
    // topk_merge: its input holds sorted runs of this many entries (a power of two), 1 if not
    run: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: SampleParams;

// Lowest finite f32: the value of padding entries (index PAD).
const NEG: f32 = -3.4028234e38;
const PAD: u32 = 0xffffffffu;

fn mix32(x: u32) -> u32 {
    var z = x;
    z = (z ^ (z >> 16u)) * 0x21f0aaadu;
    z = (z ^ (z >> 15u)) * 0x735a2d97u;
    return z ^ (z >> 15u);
}

fn rng_u32(seed: u32, step: u32, index: u32) -> u32 {
    let k = mix32(mix32(seed ^ 0x5bd1e995u) ^ step);
    return mix32(mix32(index ^ k) + k);
}

// Uniform in (0, 1): 23 random bits, exact in f32.
fn unit(h: u32) -> f32 {
    return (f32(h >> 9u) + 0.5) * (1.0 / 8388608.0);
}

// Standard Gumbel: u = (h + 0.5) / 2^32, E = -ln(1 - u) ~ Exp(1), g = -ln(E). For small u the
// series keeps full relative precision of E, so the upper tail reaches g = 22.9 (not 17 as
// with 24-bit uniforms).
fn gumbel(h: u32) -> f32 {
    let u = (f32(h) + 0.5) * 2.3283064e-10;
    var e: f32;
    if (u < 0.01) {
        e = u * (1.0 + u * (0.5 + u * (0.33333334 + u * 0.25)));
    } else {
        e = -log((f32(~h) + 0.5) * 2.3283064e-10);
    }
    return -log(e);
}

fn before(av: f32, ai: u32, bv: f32, bi: u32) -> bool {
    return av > bv || (av == bv && ai < bi);
}

fn chunk_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

var<workgroup> sv: array<f32, 1024>;
var<workgroup> si: array<u32, 1024>;
var<workgroup> red: array<f32, 256>;
var<workgroup> redi: array<u32, 256>;

// Bitonic sort of sv/si[0 .. p.sort_n) (a power of two <= 1024) into `before` order.
fn sort_desc(lid: u32) {
    sort_desc_from(lid, 2u);
}

// The same network from blocks of `first` on: the blocks of first / 2 must already be sorted,
// the even ones in `before` order and the odd ones against it, as the earlier stages leave them.
fn sort_desc_from(lid: u32, first: u32) {
    let n = p.sort_n;
    for (var size = first; size <= n; size = size << 1u) {
        for (var stride = size >> 1u; stride > 0u; stride = stride >> 1u) {
            for (var t = lid; t < n / 2u; t = t + 256u) {
                let i = 2u * stride * (t / stride) + (t % stride);
                let j = i + stride;
                let av = sv[i];
                let ai = si[i];
                let bv = sv[j];
                let bi = si[j];
                if (before(av, ai, bv, bi) != ((i & size) == 0u)) {
                    sv[i] = bv;
                    si[i] = bi;
                    sv[j] = av;
                    si[j] = ai;
                }
            }
            workgroupBarrier();
        }
    }
}

// Tree reduction of red[0..256) (sum); the result is in red[0] after the last barrier.
fn sum_red(lid: u32) {
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
        workgroupBarrier();
    }
}

// Tree reduction of (red, redi) pairs to the best in `before` order.
fn best_red(lid: u32) {
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s && before(red[lid + s], redi[lid + s], red[lid], redi[lid])) {
            red[lid] = red[lid + s];
            redi[lid] = redi[lid + s];
        }
        workgroupBarrier();
    }
}

#ifdef PENALTY
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> hist: array<u32>;
@group(0) @binding(3) var<storage, read> count: array<u32>;
@group(0) @binding(4) var<storage, read_write> work: array<f32>;

@compute @workgroup_size(256)
fn penalty_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let v = chunk_id(wid, nwg) * 256u + lid;
    if (v < p.n) { work[v] = src[v]; }
}

// HF semantics: each id in the history once (duplicates write the same value, read from the
// untouched source), l / r when l > 0 else l * r. Ids >= n are ignored.
@compute @workgroup_size(256)
fn penalty_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = chunk_id(wid, nwg) * 256u + lid;
    if (j >= min(count[0], p.cap)) { return; }
    let id = hist[j];
    if (id >= p.n) { return; }
    let l = src[id];
    work[id] = select(l * p.penalty, l / p.penalty, l > 0.0);
}
#endif

#ifdef ARGMAX
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read_write> part: array<u32>;

@compute @workgroup_size(256)
fn argmax_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunk = chunk_id(wid, nwg);
    if (chunk >= p.n_chunks) { return; }
    let s = step[0];
    var bv = NEG;
    var bi = PAD;
    for (var k = 0u; k < 4u; k = k + 1u) {
        let i = chunk * 1024u + k * 256u + lid;
        if (i < p.n) {
            var v = src[i];
            if (p.gumbel != 0u) {
                v = v * p.inv_temp + gumbel(rng_u32(p.seed, s, i));
            }
            if (before(v, i, bv, bi)) {
                bv = v;
                bi = i;
            }
        }
    }
    red[lid] = bv;
    redi[lid] = bi;
    workgroupBarrier();
    best_red(lid);
    if (lid == 0u) {
        part[2u * chunk] = bitcast<u32>(red[0]);
        part[2u * chunk + 1u] = redi[0];
    }
}
#endif

#ifdef ARGMAX_FINAL
@group(0) @binding(1) var<storage, read> part: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(256)
fn argmax_final(@builtin(local_invocation_index) lid: u32) {
    var bv = NEG;
    var bi = PAD;
    for (var c = lid; c < p.n_chunks; c = c + 256u) {
        let v = bitcast<f32>(part[2u * c]);
        let i = part[2u * c + 1u];
        if (before(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    red[lid] = bv;
    redi[lid] = bi;
    workgroupBarrier();
    best_red(lid);
    if (lid == 0u) {
        // Only all-NaN logits leave no winner.
        out[p.out_off] = select(redi[0], 0u, redi[0] == PAD);
    }
}
#endif

#ifdef TOPK_FIRST
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> cand: array<u32>;
@group(0) @binding(3) var<storage, read_write> part: array<f32>;

@compute @workgroup_size(256)
fn topk_first(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunk = chunk_id(wid, nwg);
    if (chunk >= p.n_chunks) { return; }
    for (var t = lid; t < p.sort_n; t = t + 256u) {
        let g = chunk * p.sort_n + t;
        if (g < p.n) {
            sv[t] = src[g];
            si[t] = g;
        } else {
            sv[t] = NEG;
            si[t] = PAD;
        }
    }
    workgroupBarrier();
    sort_desc(lid);
    for (var t = lid; t < p.keep; t = t + 256u) {
        let o = 2u * (chunk * p.keep + t);
        cand[o] = bitcast<u32>(sv[t]);
        cand[o + 1u] = si[t];
    }
    // Softmax partials of this chunk, relative to its own max.
    let m = sv[0];
    var s = 0.0;
    for (var t = lid; t < p.sort_n; t = t + 256u) {
        if (si[t] != PAD) { s = s + exp((sv[t] - m) * p.inv_temp); }
    }
    red[lid] = s;
    workgroupBarrier();
    sum_red(lid);
    if (lid == 0u) {
        part[2u * chunk] = m;
        part[2u * chunk + 1u] = red[0];
    }
}
#endif

#ifdef TOPK_MERGE
@group(0) @binding(1) var<storage, read> cin: array<u32>;
@group(0) @binding(2) var<storage, read_write> cand: array<u32>;

@compute @workgroup_size(256)
fn topk_merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunk = chunk_id(wid, nwg);
    if (chunk >= p.n_chunks) { return; }
    // The input is the last stage's sorted runs of p.run (aligned, whole: n is a multiple):
    // every other run is loaded reversed, so the network starts at blocks of 2 * run.
    let r = p.run;
    for (var t = lid; t < p.sort_n; t = t + 256u) {
        var from_t = t;
        if (r > 1u && (t & r) != 0u) {
            from_t = (t & ~(r - 1u)) + (r - 1u - (t & (r - 1u)));
        }
        let g = chunk * p.sort_n + from_t;
        if (g < p.n) {
            sv[t] = bitcast<f32>(cin[2u * g]);
            si[t] = cin[2u * g + 1u];
        } else {
            sv[t] = NEG;
            si[t] = PAD;
        }
    }
    workgroupBarrier();
    sort_desc_from(lid, max(2u, 2u * r));
    for (var t = lid; t < p.keep; t = t + 256u) {
        let o = 2u * (chunk * p.keep + t);
        cand[o] = bitcast<u32>(sv[t]);
        cand[o + 1u] = si[t];
    }
}
#endif

#ifdef TOPK_DRAW
@group(0) @binding(1) var<storage, read> cand: array<u32>;
@group(0) @binding(2) var<storage, read> part: array<f32>;
@group(0) @binding(3) var<storage, read> step: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

var<workgroup> prob: array<f32, 256>;

// One workgroup. Candidates (n_cand <= 256) arrive sorted; cand 0 holds the global max M.
@compute @workgroup_size(256)
fn topk_draw(@builtin(local_invocation_index) lid: u32) {
    let m = bitcast<f32>(cand[0]);
    // Normaliser: the whole vocabulary from the first stage's partials (true probabilities),
    // or (norm_topk) only the candidates, as HF's top-k-then-top-p chain renormalises.
    var s = 0.0;
    if (p.norm_topk == 0u) {
        for (var c = lid; c < p.n_chunks; c = c + 256u) {
            let sc = part[2u * c + 1u];
            if (sc > 0.0) { s = s + sc * exp((part[2u * c] - m) * p.inv_temp); }
        }
    } else {
        for (var i = lid; i < p.n_cand; i = i + 256u) {
            s = s + exp((bitcast<f32>(cand[2u * i]) - m) * p.inv_temp);
        }
    }
    red[lid] = s;
    workgroupBarrier();
    sum_red(lid);
    let z = red[0];
    if (lid < p.n_cand) {
        prob[lid] = exp((bitcast<f32>(cand[2u * lid]) - m) * p.inv_temp) / z;
    }
    workgroupBarrier();
    if (lid == 0u) {
        // Smallest prefix with cumulative probability >= top_p (at least one candidate).
        var kept = p.n_cand;
        var mass = 0.0;
        for (var i = 0u; i < p.n_cand; i = i + 1u) {
            mass = mass + prob[i];
            if (mass >= p.top_p) {
                kept = i + 1u;
                break;
            }
        }
        let r = unit(rng_u32(p.seed, step[0], PAD)) * mass;
        var pick = kept - 1u;
        var acc = 0.0;
        for (var i = 0u; i < kept; i = i + 1u) {
            acc = acc + prob[i];
            if (r < acc) {
                pick = i;
                break;
            }
        }
        out[p.out_off] = cand[2u * pick + 1u];
    }
}
#endif

#ifdef ADVANCE
@group(0) @binding(1) var<storage, read> token: array<u32>;
@group(0) @binding(2) var<storage, read_write> hist: array<u32>;
@group(0) @binding(3) var<storage, read_write> count: array<u32>;
@group(0) @binding(4) var<storage, read_write> step: array<u32>;

// One invocation: history[count] = token (while there is room), count += 1, step += bump_step.
@compute @workgroup_size(1)
fn advance() {
    let c = count[0];
    if (c < p.cap) {
        hist[c] = token[p.out_off];
        count[0] = c + 1u;
    }
    step[0] = step[0] + p.bump_step;
}
#endif
