//! The one C++ bridge: every call into libtorch's C++ API that tch does not expose, in
//! `bridge.cpp` (compiled by build.rs against the wheel's headers) behind a C ABI declared
//! here. c10d's stores and ProcessGroupNCCL (used by [`crate::distributed`]), sync BN's
//! differentiable all-reduce, autocast's dtype and CPU switch ([`crate::train::amp`]), and
//! PyTorch's multi-tensor and fused SGD kernels ([`crate::train::optim`]), and the hooks that
//! tell when a parameter's gradient is ready ([`crate::train::grads`]).
//!
//! The symbols are prefixed `mgb_`, apart from the public C API's `mg_`. Every entry point
//! that can fail catches C++ exceptions and reports them through an error buffer, which
//! [`call`] turns into `Error::Torch`.

use std::ffi::{c_char, c_int, c_void};

use torch_sys::C_tensor;

use crate::error::{Error, Result};

const ERR_LEN: usize = 4096;

/// Runs one bridge call with an error buffer; a non-zero return becomes `Error::Torch` with
/// `what` and libtorch's message.
pub(crate) fn call(what: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
    let mut buf = vec![0u8; ERR_LEN];
    let rc = f(buf.as_mut_ptr().cast(), buf.len());
    if rc == 0 {
        return Ok(());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let msg = String::from_utf8_lossy(&buf[..end]);
    Err(Error::Torch(format!("{what}: {}", msg.trim_end())))
}

/// Sums `t` over a group of ranks in place (the Rust side of sync BN's all-reduce); returns 0,
/// or non-zero after writing a message into (err, len).
pub(crate) type ReduceFn = extern "C" fn(*mut c_void, *mut C_tensor, *mut c_char, usize) -> c_int;

/// Told the index of a parameter whose gradient autograd has just accumulated (see
/// `mgb_grad_hooks_new`); runs inside backward, so it must not unwind.
pub(crate) type ReadyFn = extern "C" fn(*mut c_void, usize);

extern "C" {
    pub fn mgb_store_tcp(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world_size: i64,
        wait_workers: c_int,
        timeout_ms: i64,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_store_file(
        path: *const c_char,
        world_size: i64,
        timeout_ms: i64,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_store_prefixed(
        store: *mut c_void,
        prefix: *const c_char,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_store_port(store: *mut c_void) -> u16;
    pub fn mgb_store_free(store: *mut c_void);
    pub fn mgb_store_set_timeout(
        store: *mut c_void,
        timeout_ms: i64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_store_set(
        store: *mut c_void,
        key: *const c_char,
        data: *const u8,
        len: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_store_get(
        store: *mut c_void,
        key: *const c_char,
        data: *mut *mut u8,
        len: *mut usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_free(p: *mut c_void);
    pub fn mgb_store_add(
        store: *mut c_void,
        key: *const c_char,
        delta: i64,
        out: *mut i64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}

extern "C" {
    pub fn mgb_differentiable_all_reduce(
        x: *const C_tensor,
        f: ReduceFn,
        user: *mut c_void,
        out: *mut *mut C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_autocast_enter(
        device: i8,
        dtype: i8,
        was_enabled: *mut c_int,
        was_dtype: *mut i8,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_autocast_exit(
        device: i8,
        was_enabled: c_int,
        was_dtype: i8,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    #[cfg(test)]
    pub fn mgb_autocast_state(
        device: i8,
        enabled: *mut c_int,
        dtype: *mut i8,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_grad_hooks_new(
        params: *const *const C_tensor,
        n: usize,
        f: ReadyFn,
        user: *mut c_void,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_grad_hooks_free(hooks: *mut c_void);
    pub fn mgb_fill(t: *const C_tensor, v: f64, err: *mut c_char, err_len: usize) -> c_int;
    pub fn mgb_set_grad(
        param: *const C_tensor,
        grad: *const C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn mgb_sgd_step(
        params: *const *const C_tensor,
        grads: *const *const C_tensor,
        bufs: *const *const C_tensor,
        n: usize,
        lr: f64,
        lr_t: *const C_tensor,
        weight_decay: f64,
        momentum: f64,
        dampening: f64,
        nesterov: c_int,
        first_step: c_int,
        fused: c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}

#[cfg(mg_nccl)]
extern "C" {
    pub fn mgb_nccl_new(
        store: *mut c_void,
        rank: i64,
        size: i64,
        device: i64,
        timeout_ms: i64,
        group_name: *const c_char,
        global_ranks: *const u64,
        n_global: usize,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_nccl_free(pg: *mut c_void);
    pub fn mgb_nccl_all_reduce_sum(
        pg: *mut c_void,
        ts: *const *const c_void,
        n: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_nccl_all_reduce_start(
        pg: *mut c_void,
        t: *const c_void,
        work: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_work_wait(work: *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
    pub fn mgb_work_free(work: *mut c_void);
    pub fn mgb_nccl_broadcast(
        pg: *mut c_void,
        ts: *const *const c_void,
        n: usize,
        root: i64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_graph_pool(
        first: *mut u64,
        second: *mut u64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_graph_new(out: *mut *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
    pub fn mgb_graph_free(graph: *mut c_void);
    pub fn mgb_graph_capture_begin(
        graph: *mut c_void,
        device: i64,
        pool_first: u64,
        pool_second: u64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub fn mgb_graph_capture_end(graph: *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
    pub fn mgb_graph_replay(graph: *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
    pub fn mgb_nccl_barrier(pg: *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
    pub fn mgb_nccl_all_gather(
        pg: *mut c_void,
        input: *const c_void,
        output: *const c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
}
