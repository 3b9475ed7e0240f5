//! Seconds on a monotonic clock, on every target (`std::time::Instant` panics in wasm32).

#[cfg(not(target_arch = "wasm32"))]
pub fn now_s() -> f64 {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
}

/// `performance.now()` of the window or worker.
#[cfg(all(target_arch = "wasm32", feature = "web"))]
pub fn now_s() -> f64 {
    use wasm_bindgen::JsCast;
    let perf = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).ok();
    let now = perf.as_ref().and_then(|p| js_sys::Reflect::get(p, &"now".into()).ok());
    match (perf, now.and_then(|f| f.dyn_into::<js_sys::Function>().ok())) {
        (Some(p), Some(f)) => f.call0(&p).ok().and_then(|v| v.as_f64()).unwrap_or(0.0) / 1e3,
        _ => js_sys::Date::now() / 1e3,
    }
}

#[cfg(all(target_arch = "wasm32", not(feature = "web")))]
pub fn now_s() -> f64 {
    0.0
}
