// Scaled dot-product attention with an online (flash-style) softmax: never materialises the
// score matrix, so any sequence length fits. Each invocation owns one query row of one head;
// the workgroup streams K and V through workgroup memory in tiles of BKV rows.
// Row views: q[q_off + i*q_stride + h*D + d], k/v likewise with their kv head (GQA: heads
// share kv heads in groups), o like q. `seq` = [position of query row 0, number of valid kv
// rows]; it is storage so a recorded decode step can be replayed at a new position.
// Causal: query i sees keys j <= seq[0] + i. Flags: HD32 / HD64 / HD128 (head dim), F16.

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

#ifdef HD128
const D: u32 = 128u;
#else
#ifdef HD32
const D: u32 = 32u;
#else
const D: u32 = 64u;
#endif
#endif
const D4: u32 = D / 4u;
const BQ: u32 = 64u;
// K and V tiles: 2 * 16 * 128 * 4 bytes = 16 KiB at D = 128, the WebGPU default budget.
const BKV: u32 = 16u;

struct AttnParams {
    m: u32,
    heads: u32,
    kv_heads: u32,
    causal: u32,
    q_off: u32,
    q_stride: u32,
    k_off: u32,
    k_stride: u32,
    v_off: u32,
    v_stride: u32,
    o_off: u32,
    o_stride: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: AttnParams;
@group(0) @binding(1) var<storage, read> seq: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<T>;
@group(0) @binding(3) var<storage, read> k: array<T>;
@group(0) @binding(4) var<storage, read> v: array<T>;
@group(0) @binding(5) var<storage, read_write> o: array<T>;

var<workgroup> ks: array<vec4<f32>, BKV * D4>;
var<workgroup> vs: array<vec4<f32>, BKV * D4>;

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.y;
    let kvh = h / (p.heads / p.kv_heads);
    let qi = wid.x * BQ + lid;
    let valid = qi < p.m;
    let q0 = seq[0];
    let kv_len = seq[1];
    // Keys this workgroup can see (uniform across it, so barriers stay in uniform control flow).
    var kend = kv_len;
    if (p.causal != 0u) {
        kend = min(kv_len, q0 + min(p.m, (wid.x + 1u) * BQ));
    }
    let qpos = q0 + qi;

    var qv: array<vec4<f32>, D4>;
    var acc: array<vec4<f32>, D4>;
    let qb = p.q_off + qi * p.q_stride + h * D;
    for (var d = 0u; d < D4; d++) {
        acc[d] = vec4<f32>(0.0);
        if (valid) {
            qv[d] = vec4<f32>(f32(q[qb + 4u * d]), f32(q[qb + 4u * d + 1u]), f32(q[qb + 4u * d + 2u]), f32(q[qb + 4u * d + 3u])) * p.scale;
        }
    }
    var run_max = -3.4028234e38;
    var run_sum = 0.0;

    for (var t0 = 0u; t0 < kend; t0 += BKV) {
        for (var e = lid; e < BKV * D; e += 64u) {
            let j = e / D;
            let c = e % D;
            var kx = 0.0;
            var vx = 0.0;
            if (t0 + j < kend) {
                kx = f32(k[p.k_off + (t0 + j) * p.k_stride + kvh * D + c]);
                vx = f32(v[p.v_off + (t0 + j) * p.v_stride + kvh * D + c]);
            }
            ks[j * D4 + c / 4u][c % 4u] = kx;
            vs[j * D4 + c / 4u][c % 4u] = vx;
        }
        workgroupBarrier();
        if (valid) {
            var s: array<f32, BKV>;
            var tile_max = -3.4028234e38;
            var any_visible = false;
            for (var j = 0u; j < BKV; j++) {
                let key = t0 + j;
                let visible = key < kend && (p.causal == 0u || key <= qpos);
                var dotv = 0.0;
                if (visible) {
                    for (var d = 0u; d < D4; d++) {
                        dotv += dot(qv[d], ks[j * D4 + d]);
                    }
                    tile_max = max(tile_max, dotv);
                    any_visible = true;
                }
                s[j] = select(-3.4028234e38, dotv, visible);
            }
            if (any_visible) {
                let new_max = max(run_max, tile_max);
                let corr = exp(run_max - new_max);
                run_sum *= corr;
                for (var d = 0u; d < D4; d++) {
                    acc[d] *= corr;
                }
                for (var j = 0u; j < BKV; j++) {
                    let key = t0 + j;
                    if (key < kend && (p.causal == 0u || key <= qpos)) {
                        let pj = exp(s[j] - new_max);
                        run_sum += pj;
                        for (var d = 0u; d < D4; d++) {
                            acc[d] += pj * vs[j * D4 + d];
                        }
                    }
                }
                run_max = new_max;
            }
        }
        workgroupBarrier();
    }
    if (valid) {
        let inv = 1.0 / run_sum;
        let ob = p.o_off + qi * p.o_stride + h * D;
        for (var d = 0u; d < D4; d++) {
            let r = acc[d] * inv;
            o[ob + 4u * d] = T(r.x);
            o[ob + 4u * d + 1u] = T(r.y);
            o[ob + 4u * d + 2u] = T(r.z);
            o[ob + 4u * d + 3u] = T(r.w);
        }
    }
}
