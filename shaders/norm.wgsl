// Row normalisation, one workgroup per row: LayerNorm (weight, bias, eps; biased variance as
// torch) and RMSNorm (weight, eps; as Llama: x * rsqrt(mean(x^2) + eps) * weight).
// Weight and bias are f32; activations f32 or (F16) f16; statistics in f32, two passes.
// SUBGROUPS: the row sums reduce through subgroupAdd (see reduce_sum).

#ifdef F16
alias T = f16;
#else
alias T = f32;
#endif

struct NormParams {
    rows: u32,
    cols: u32,
    x_off: u32,
    x_stride: u32,
    y_off: u32,
    y_stride: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: NormParams;
@group(0) @binding(1) var<storage, read> x: array<T>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;

var<workgroup> red: array<f32, 256>;

#ifdef SUBGROUPS
// SUBGROUPS (any subgroup size): each subgroup sums with subgroupAdd and its first lane leaves
// the sum in `red`; every invocation then adds the subgroups' sums. Two barriers where the
// tree below takes nine. The entry points keep their subgroup's place in `sg` first.
struct SubgroupPlace {
    @builtin(subgroup_id) id: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(num_subgroups) count: u32,
}
var<private> sg: SubgroupPlace;

fn reduce_sum(lid: u32, v: f32) -> f32 {
    let s = subgroupAdd(v);
    if (sg.lane == 0u) {
        red[sg.id] = s;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var i = 0u; i < sg.count; i++) {
        total += red[i];
    }
    workgroupBarrier();
    return total;
}
#else
fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}
#endif

@compute @workgroup_size(256)
fn layernorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
#ifdef SUBGROUPS
    place: SubgroupPlace,
#endif
) {
#ifdef SUBGROUPS
    sg = place;
#endif
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) { return; }
    let xb = p.x_off + r * p.x_stride;
    var s = 0.0;
    for (var c = lid; c < p.cols; c += 256u) {
        s += f32(x[xb + c]);
    }
    let mean = reduce_sum(lid, s) / f32(p.cols);
    var v = 0.0;
    for (var c = lid; c < p.cols; c += 256u) {
        let d = f32(x[xb + c]) - mean;
        v += d * d;
    }
    let rstd = inverseSqrt(reduce_sum(lid, v) / f32(p.cols) + p.eps);
    let yb = p.y_off + r * p.y_stride;
    for (var c = lid; c < p.cols; c += 256u) {
        y[yb + c] = T((f32(x[xb + c]) - mean) * rstd * weight[c] + bias[c]);
    }
}

@compute @workgroup_size(256)
fn rmsnorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
#ifdef SUBGROUPS
    place: SubgroupPlace,
#endif
) {
#ifdef SUBGROUPS
    sg = place;
#endif
    let r = wid.x + wid.y * nwg.x;
    if (r >= p.rows) { return; }
    let xb = p.x_off + r * p.x_stride;
    var s = 0.0;
    for (var c = lid; c < p.cols; c += 256u) {
        let v = f32(x[xb + c]);
        s += v * v;
    }
    let rstd = inverseSqrt(reduce_sum(lid, s) / f32(p.cols) + p.eps);
    let yb = p.y_off + r * p.y_stride;
    for (var c = lid; c < p.cols; c += 256u) {
        y[yb + c] = T(f32(x[xb + c]) * rstd * weight[c]);
    }
}
