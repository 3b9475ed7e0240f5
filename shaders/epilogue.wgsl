// The linear layers' epilogue, shared by matmul, matmul_coop and qmatmul (included after
// `gelu`): y[m, n_off + n] = act(acc + bias[bias_off + n]) (+ y). Needs `p` (flags, act,
// bias_off, y_off, y_stride, n_off), `bias`, `y` and the alias `T` from the including shader
// (Y_F32: `y` is f32 whatever `T` is).
fn finish(m: u32, n: u32, acc: f32) {
    var v = acc;
    if ((p.flags & 1u) != 0u) {
        v += bias[p.bias_off + n];
    }
    if (p.act == 1u) {
        v = gelu_erf_f(v);
    } else if (p.act == 2u) {
        v = gelu_tanh_f(v);
    }
    let i = p.y_off + m * p.y_stride + p.n_off + n;
    if ((p.flags & 2u) != 0u) {
        v += f32(y[i]);
    }
#ifdef Y_F32
    y[i] = v;
#else
    y[i] = T(v);
#endif
}
