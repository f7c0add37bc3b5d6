//! libtorch's c10d from Rust, through the C++ bridge (src/bridge/, compiled by build.rs): the
//! stores ranks meet at (TCPStore, FileStore, PrefixStore; built whenever libtorch is) and, when
//! libtorch has CUDA and the NCCL headers were found at build time, a ProcessGroupNCCL behind
//! [`Collective`].
//!
//! Rendezvous follows `torch.distributed.init_process_group`'s init methods, so a job started
//! by torchrun (or by hand with MASTER_ADDR/MASTER_PORT) meets the way PyTorch users expect.

use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr::NonNull;
use std::time::Duration;

use crate::bridge::{
    self, mgb_free, mgb_store_add, mgb_store_file, mgb_store_free, mgb_store_get, mgb_store_port,
    mgb_store_prefixed, mgb_store_set, mgb_store_set_timeout, mgb_store_tcp,
};
use crate::distributed::{DistOptions, Launch};
use crate::error::{Error, Result};
use crate::schedule::InitMethod;

/// Every key this crate writes lives under this prefix of the rendezvous store, so a store
/// shared with torchrun's agent (or another library) keeps its keys apart.
pub const STORE_PREFIX: &str = "multigrid";

/// Runs one bridge call; a non-zero return becomes `Error::Torch` naming c10d and `what`.
fn call(what: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
    bridge::call(&format!("c10d {what}"), f)
}

fn cstr(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("{what} {s:?} contains a NUL byte")))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A c10d key-value store: the rendezvous every rank of a job meets at.
pub struct Store {
    ptr: NonNull<c_void>,
}

// SAFETY: c10d's stores lock internally, and the handle is an owned intrusive pointer that
// no other Rust value aliases, so it may move to another thread.
unsafe impl Send for Store {}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: the pointer came from the bridge, is owned by this Store and freed once, here.
        unsafe { mgb_store_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("port", &self.port()).finish()
    }
}

impl Store {
    fn from_raw(ptr: *mut c_void) -> Result<Store> {
        NonNull::new(ptr)
            .map(|ptr| Store { ptr })
            .ok_or_else(|| Error::Torch("c10d returned no store".into()))
    }

    /// A TCPStore at `host:port`. The server (`is_server`) listens there; port 0 lets it pick
    /// a free port ([`Store::port`] tells which). A server on a fixed port waits up to
    /// `timeout` for `world_size` participants, itself included, as torch's does; on port 0
    /// nobody can know the port yet, so it returns at once. A client connects, retrying up to
    /// `timeout`. `timeout` also bounds every later [`Store::get`].
    pub fn tcp(
        host: &str,
        port: u16,
        is_server: bool,
        world_size: usize,
        timeout: Duration,
    ) -> Result<Store> {
        if !is_server && port == 0 {
            return Err(Error::InvalidArgument(format!(
                "a TCPStore client needs the server's port (got {host}:0)"
            )));
        }
        let host_c = cstr("store host", host)?;
        let world = i64::try_from(world_size).unwrap_or(i64::MAX);
        let wait = !(is_server && port == 0) && world_size > 0;
        let mut out = std::ptr::null_mut();
        // SAFETY: host_c outlives the call; `out` is written only on success; e/l is the bridge's
        // error buffer (bridge::call).
        call(&format!("TCPStore at {host}:{port}"), |e, l| unsafe {
            mgb_store_tcp(
                host_c.as_ptr(),
                port,
                c_int::from(is_server),
                world,
                c_int::from(wait),
                millis(timeout),
                &mut out,
                e,
                l,
            )
        })?;
        Store::from_raw(out)
    }

    /// A FileStore: `path` on a file system every rank sees. `timeout` bounds [`Store::get`].
    pub fn file(path: &str, world_size: usize, timeout: Duration) -> Result<Store> {
        let path_c = cstr("store path", path)?;
        let world = i64::try_from(world_size).unwrap_or(i64::MAX);
        let mut out = std::ptr::null_mut();
        // SAFETY: path_c outlives the call; `out` is written only on success.
        call(&format!("FileStore at {path}"), |e, l| unsafe {
            mgb_store_file(path_c.as_ptr(), world, millis(timeout), &mut out, e, l)
        })?;
        Store::from_raw(out)
    }

    /// A view of this store whose keys are all under `prefix/`.
    pub fn prefixed(&self, prefix: &str) -> Result<Store> {
        let prefix_c = cstr("store prefix", prefix)?;
        let mut out = std::ptr::null_mut();
        // SAFETY: self.ptr is a live store; prefix_c outlives the call; `out` is written only on
        // success.
        call("PrefixStore", |e, l| unsafe {
            mgb_store_prefixed(self.ptr.as_ptr(), prefix_c.as_ptr(), &mut out, e, l)
        })?;
        Store::from_raw(out)
    }

    /// The TCP port of the underlying TCPStore (the one picked when created with port 0); 0
    /// for a FileStore.
    pub fn port(&self) -> u16 {
        // SAFETY: self.ptr is a live store; the bridge only reads it.
        unsafe { mgb_store_port(self.ptr.as_ptr()) }
    }

    /// How long [`Store::get`] waits for a missing key from now on.
    pub fn set_timeout(&self, timeout: Duration) -> Result<()> {
        // SAFETY: self.ptr is a live store.
        call("set_timeout", |e, l| unsafe {
            mgb_store_set_timeout(self.ptr.as_ptr(), millis(timeout), e, l)
        })
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let key_c = cstr("store key", key)?;
        // SAFETY: self.ptr is a live store; key_c and value outlive the call, which only
        // reads them.
        call(&format!("set {key:?}"), |e, l| unsafe {
            mgb_store_set(
                self.ptr.as_ptr(),
                key_c.as_ptr(),
                value.as_ptr(),
                value.len(),
                e,
                l,
            )
        })
    }

    /// The value of `key`, waiting for another participant to set it for up to the store's
    /// timeout; an error after that.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let key_c = cstr("store key", key)?;
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: self.ptr is a live store; key_c outlives the call; data and len are written on
        // success, with a buffer the bridge allocated.
        call(&format!("get {key:?}"), |e, l| unsafe {
            mgb_store_get(self.ptr.as_ptr(), key_c.as_ptr(), &mut data, &mut len, e, l)
        })?;
        if data.is_null() {
            return Ok(Vec::new());
        }
        // SAFETY: not NULL (checked above): the bridge's buffer of `len` readable bytes.
        let v = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
        // SAFETY: `data` was allocated by the bridge for this call and is freed once, after
        // the copy.
        unsafe { mgb_free(data.cast()) };
        Ok(v)
    }

    /// Adds `delta` to the integer at `key` (0 when missing) and returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let key_c = cstr("store key", key)?;
        let mut out = 0i64;
        // SAFETY: self.ptr is a live store; key_c outlives the call; `out` is written on success.
        call(&format!("add {key:?}"), |e, l| unsafe {
            mgb_store_add(self.ptr.as_ptr(), key_c.as_ptr(), delta, &mut out, e, l)
        })?;
        Ok(out)
    }
}

/// Where `init` (`run.dist_init_method`, or the C API's) says the ranks meet, with `env://`
/// resolved to MASTER_ADDR:MASTER_PORT; true when torchrun's agent already serves that store.
fn parse_init_method(init: &str, launch: &Launch) -> Result<(InitMethod, bool)> {
    let method: InitMethod = init
        .parse()
        .map_err(|e| Error::InvalidArgument(format!("init method {e}")))?;
    if method != InitMethod::Env {
        return Ok((method, false));
    }
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "init method env://: {why} (set it, or use tcp://HOST:PORT or file:///PATH)"
        ))
    };
    let host = launch
        .master_addr
        .clone()
        .ok_or_else(|| bad("MASTER_ADDR is not set"))?;
    let port = launch
        .master_port
        .ok_or_else(|| bad("MASTER_PORT is not set"))?;
    // torch honours TORCHELASTIC_USE_AGENT_STORE for env:// only.
    Ok((InitMethod::Tcp { host, port }, launch.agent_store))
}

/// The store every rank of the job meets at, as `torch.distributed.init_process_group` builds
/// it from `options.init_method`, seen through the prefix [`STORE_PREFIX`]:
/// - `env://`: a TCPStore at MASTER_ADDR:MASTER_PORT (`launch.master_addr`/`master_port`);
///   rank 0 serves it, unless torchrun's agent already does (`launch.agent_store`), in which
///   case every rank is a client;
/// - `tcp://HOST:PORT`: a TCPStore there, served by rank 0;
/// - `file:///PATH`: a FileStore.
///
/// The server waits up to `options.timeout` for all `launch.world_size` ranks.
pub fn rendezvous(options: &DistOptions, launch: &Launch) -> Result<Store> {
    let (method, agent_store) = parse_init_method(&options.init_method, launch)?;
    let base = match method {
        InitMethod::Tcp { host, port } => {
            let is_server = launch.rank == 0 && !agent_store;
            Store::tcp(&host, port, is_server, launch.world_size, options.timeout)?
        }
        InitMethod::File(path) => Store::file(&path, launch.world_size, options.timeout)?,
        InitMethod::Env => {
            return Err(Error::InvalidArgument(
                "env:// is resolved to MASTER_ADDR:MASTER_PORT before a store is made".into(),
            ))
        }
    };
    // torchrun's agent store outlives a restart of the workers: each attempt keeps its own
    // keys, as torch does, or a restarted rank could read the previous attempt's NCCL id.
    match std::env::var("TORCHELASTIC_RESTART_COUNT") {
        Ok(n) if agent_store => base.prefixed(&format!("{STORE_PREFIX}/attempt_{}", n.trim())),
        _ => base.prefixed(STORE_PREFIX),
    }
}

/// What in the environment would stop NCCL from ending the job when a peer dies, given how
/// variables are read (`get`). PyTorch's ProcessGroupNCCL tears the process down when a
/// collective fails or passes its timeout (`run.dist_timeout_s`): TORCH_NCCL_ASYNC_ERROR_HANDLING
/// 3 (its default) or 1. 0 and 2 leave the process alive, waiting, and TORCH_NCCL_BLOCKING_WAIT
/// changes how the wait fails; each gets a line saying what the user will see.
pub fn nccl_environment_warnings(get: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    let handling = [
        "TORCH_NCCL_ASYNC_ERROR_HANDLING",
        "NCCL_ASYNC_ERROR_HANDLING",
    ]
    .into_iter()
    .find_map(|k| get(k).map(|v| (k, v)));
    if let Some((key, v)) = handling {
        match v.trim() {
            "1" | "3" => {}
            "0" | "2" => out.push(format!(
                "{key}={v}: a NCCL error or timeout will not end this process, so a rank whose \
                 peer died can stay in its collective; unset it (PyTorch's default, 3, ends the \
                 process after run.dist_timeout_s)"
            )),
            other => out.push(format!(
                "{key}={other:?} is not one of 0-3; PyTorch will read it as it does"
            )),
        }
    }
    if let Some(v) = ["TORCH_NCCL_BLOCKING_WAIT", "NCCL_BLOCKING_WAIT"]
        .into_iter()
        .find_map(get)
    {
        if v.trim() == "1" {
            out.push(
                "TORCH_NCCL_BLOCKING_WAIT=1: a timed-out collective raises on the host instead \
                 of ending the process; multigrid turns it into an error and exits non-zero"
                    .into(),
            );
        }
    }
    out
}

/// Whether this build has the NCCL backend ([`Nccl`]).
pub fn nccl_available() -> bool {
    cfg!(mg_nccl)
}

#[cfg(mg_nccl)]
pub use nccl::Nccl;

#[cfg(mg_nccl)]
mod nccl {
    use std::collections::HashMap;
    use std::ffi::c_void;
    use std::ptr::NonNull;

    use tch::{Device, Kind, Tensor};

    use super::{call, cstr, millis, rendezvous, Store};
    use crate::distributed::{Collective, DistOptions, Launch};
    use crate::error::{Error, Result};

    use crate::bridge::{
        mgb_nccl_all_gather, mgb_nccl_all_reduce_start, mgb_nccl_all_reduce_sum, mgb_nccl_barrier,
        mgb_nccl_broadcast, mgb_nccl_free, mgb_nccl_new, mgb_work_free, mgb_work_wait,
    };

    /// A collective in flight (c10d's Work), freed on drop.
    struct Work {
        ptr: NonNull<c_void>,
        /// Kept alive until the collective is waited for.
        _tensor: Tensor,
    }

    impl Work {
        fn wait(&self) -> Result<()> {
            // SAFETY: ptr is a live Work handle owned by this value.
            call("all_reduce", |e, l| unsafe {
                mgb_work_wait(self.ptr.as_ptr(), e, l)
            })
        }
    }

    impl Drop for Work {
        fn drop(&mut self) {
            // SAFETY: the handle is owned by this value and freed once, here. c10d's Work
            // keeps its own references to the tensors it uses.
            unsafe { mgb_work_free(self.ptr.as_ptr()) }
        }
    }

    /// One ProcessGroupNCCL; shut down and freed on drop.
    struct Group {
        ptr: NonNull<c_void>,
    }

    impl Group {
        fn new(
            store: &Store,
            rank: usize,
            size: usize,
            device: usize,
            timeout_ms: i64,
            name: &str,
            global_ranks: &[usize],
        ) -> Result<Group> {
            let name_c = cstr("group name", name)?;
            let ranks: Vec<u64> = global_ranks.iter().map(|&r| r as u64).collect();
            let mut out = std::ptr::null_mut();
            // SAFETY: store.ptr is live; name_c and ranks outlive the call; `out` is written
            // only on success.
            call(&format!("ProcessGroupNCCL {name}"), |e, l| unsafe {
                mgb_nccl_new(
                    store.ptr.as_ptr(),
                    rank as i64,
                    size as i64,
                    device as i64,
                    timeout_ms,
                    name_c.as_ptr(),
                    ranks.as_ptr(),
                    ranks.len(),
                    &mut out,
                    e,
                    l,
                )
            })?;
            NonNull::new(out)
                .map(|ptr| Group { ptr })
                .ok_or_else(|| Error::Torch("c10d returned no process group".into()))
        }

        fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<()> {
            let ptrs = pointers(tensors);
            // SAFETY: self.ptr is a live process group; ptrs holds live tensor handles that outlive
            // the call (the collective is waited on before it returns).
            call("all_reduce", |e, l| unsafe {
                mgb_nccl_all_reduce_sum(self.ptr.as_ptr(), ptrs.as_ptr(), ptrs.len(), e, l)
            })
        }
    }

    impl Drop for Group {
        fn drop(&mut self) {
            // SAFETY: the group is owned by this value and freed once, here.
            unsafe { mgb_nccl_free(self.ptr.as_ptr()) }
        }
    }

    fn pointers(tensors: &[Tensor]) -> Vec<*const c_void> {
        tensors
            .iter()
            .map(|t| t.as_ptr().cast::<c_void>())
            .collect()
    }

    /// NCCL through c10d's ProcessGroupNCCL, one process per GPU.
    pub struct Nccl {
        // Dropped in this order: collectives in flight, sub-groups, the world group, then the
        // store.
        started: Vec<Work>,
        groups: HashMap<Vec<usize>, Group>,
        world: Group,
        store: Store,
        rank: usize,
        world_size: usize,
        device: usize,
        timeout_ms: i64,
    }

    // SAFETY: the process groups are owned and used through &mut self only, so moving the
    // value to another thread cannot make two threads use a group at once.
    unsafe impl Send for Nccl {}

    impl Nccl {
        /// Meets the other ranks at `options.init_method` (see [`rendezvous`]) and creates the
        /// world's NCCL communicator on `cuda:device_index` now, with `options.timeout` as
        /// every collective's timeout.
        pub fn connect(
            options: &DistOptions,
            launch: &Launch,
            device_index: usize,
        ) -> Result<Nccl> {
            if launch.world_size == 0 || launch.rank >= launch.world_size {
                return Err(Error::InvalidArgument(format!(
                    "rank {} outside a world of {}",
                    launch.rank, launch.world_size
                )));
            }
            if launch.rank == 0 {
                for w in super::nccl_environment_warnings(|k| std::env::var(k).ok()) {
                    eprintln!("multigrid: warning: {w}");
                }
            }
            let store = rendezvous(options, launch)?;
            let timeout_ms = millis(options.timeout);
            let world = Group::new(
                &store,
                launch.rank,
                launch.world_size,
                device_index,
                timeout_ms,
                "0",
                &[],
            )?;
            Ok(Nccl {
                started: Vec::new(),
                groups: HashMap::new(),
                world,
                store,
                rank: launch.rank,
                world_size: launch.world_size,
                device: device_index,
                timeout_ms,
            })
        }

        /// The sub-group of `group`'s ranks, created on first use from a store prefix named
        /// after them, so only its members take part.
        fn group(&mut self, group: &[usize]) -> Result<&Group> {
            if !self.groups.contains_key(group) {
                let me = group.iter().position(|&r| r == self.rank).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "rank {} is not in the group {group:?}",
                        self.rank
                    ))
                })?;
                let names: Vec<String> = group.iter().map(|r| r.to_string()).collect();
                let store = self.store.prefixed(&format!("group/{}", names.join(",")))?;
                let name = format!("multigrid_group_{}", names.join("_"));
                let g = Group::new(
                    &store,
                    me,
                    group.len(),
                    self.device,
                    self.timeout_ms,
                    &name,
                    group,
                )?;
                self.groups.insert(group.to_vec(), g);
            }
            Ok(&self.groups[group])
        }
    }

    impl Collective for Nccl {
        fn rank(&self) -> usize {
            self.rank
        }
        fn world_size(&self) -> usize {
            self.world_size
        }
        fn backend(&self) -> &'static str {
            "nccl"
        }
        fn all_reduce_sum(&mut self, tensors: &[Tensor]) -> Result<()> {
            if tensors.is_empty() {
                return Ok(());
            }
            self.world.all_reduce_sum(tensors)
        }
        fn start_all_reduce_sum(&mut self, tensor: &Tensor) -> Result<()> {
            let mut out = std::ptr::null_mut();
            // SAFETY: the world group is live; the tensor handle outlives the call and the
            // Work keeps a clone of it; `out` is written only on success.
            call("all_reduce", |e, l| unsafe {
                mgb_nccl_all_reduce_start(
                    self.world.ptr.as_ptr(),
                    tensor.as_ptr().cast::<c_void>(),
                    &mut out,
                    e,
                    l,
                )
            })?;
            let ptr = NonNull::new(out)
                .ok_or_else(|| Error::Torch("c10d returned no work handle".into()))?;
            self.started.push(Work {
                ptr,
                _tensor: tensor.shallow_clone(),
            });
            Ok(())
        }
        fn wait_started(&mut self) -> Result<()> {
            let mut first_error = Ok(());
            for w in self.started.drain(..) {
                if let Err(e) = w.wait() {
                    first_error = first_error.and(Err(e));
                }
            }
            first_error
        }
        fn all_reduce_sum_group(&mut self, tensors: &[Tensor], group: &[usize]) -> Result<()> {
            let ascending = group.windows(2).all(|w| w[0] < w[1]);
            if !ascending || group.last().is_some_and(|&r| r >= self.world_size) {
                return Err(Error::InvalidArgument(format!(
                    "group {group:?}: expected ascending distinct ranks below {}",
                    self.world_size
                )));
            }
            if !group.contains(&self.rank) {
                return Err(Error::InvalidArgument(format!(
                    "rank {} is not in the group {group:?}",
                    self.rank
                )));
            }
            if tensors.is_empty() || group.len() == 1 {
                return Ok(());
            }
            if group.len() == self.world_size {
                return self.world.all_reduce_sum(tensors);
            }
            self.group(group)?.all_reduce_sum(tensors)
        }
        fn create_group(&mut self, group: &[usize]) -> Result<()> {
            if group.len() <= 1 || group.len() == self.world_size {
                return Ok(());
            }
            // NCCL makes a communicator at its first collective: one on one element, so a
            // failure to make it comes now.
            let probe = Tensor::f_zeros([1], (Kind::Float, Device::Cuda(self.device)))?;
            self.all_reduce_sum_group(&[probe], group)
        }
        fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<()> {
            if root >= self.world_size {
                return Err(Error::InvalidArgument(format!(
                    "broadcast root {root} outside a world of {}",
                    self.world_size
                )));
            }
            if tensors.is_empty() {
                return Ok(());
            }
            let ptrs = pointers(tensors);
            // SAFETY: the world group is live; ptrs holds live tensor handles that outlive the
            // call.
            call("broadcast", |e, l| unsafe {
                mgb_nccl_broadcast(
                    self.world.ptr.as_ptr(),
                    ptrs.as_ptr(),
                    ptrs.len(),
                    root as i64,
                    e,
                    l,
                )
            })
        }
        fn barrier(&mut self) -> Result<()> {
            // SAFETY: the world group is live.
            call("barrier", |e, l| unsafe {
                mgb_nccl_barrier(self.world.ptr.as_ptr(), e, l)
            })
        }
        fn all_gather_f64(&mut self, values: &[f64]) -> Result<Vec<Vec<f64>>> {
            let n = values.len();
            if n == 0 {
                return Ok(vec![Vec::new(); self.world_size]);
            }
            let device = Device::Cuda(self.device);
            let input = Tensor::f_from_slice(values)?.f_to_device(device)?;
            let output = Tensor::f_zeros([(self.world_size * n) as i64], (Kind::Double, device))?;
            // SAFETY: the world group is live; input and output are live tensors sized as the
            // bridge expects (n per rank, world_size x n out).
            call("all_gather", |e, l| unsafe {
                mgb_nccl_all_gather(
                    self.world.ptr.as_ptr(),
                    input.as_ptr().cast(),
                    output.as_ptr().cast(),
                    e,
                    l,
                )
            })?;
            let host = output.f_to_device(Device::Cpu)?;
            let flat = Vec::<f64>::try_from(&host)?;
            Ok(flat.chunks(n).map(<[f64]>::to_vec).collect())
        }
    }
}

/// Stands in for the NCCL backend in builds without it: [`Nccl::connect`] says why.
#[cfg(not(mg_nccl))]
pub struct Nccl {
    never: std::convert::Infallible,
}

#[cfg(not(mg_nccl))]
impl Nccl {
    pub fn connect(_: &DistOptions, _: &Launch, _: usize) -> Result<Nccl> {
        Err(Error::Unsupported(
            "this libmultigrid was built without NCCL: libtorch has no CUDA, or nccl.h and the \
             CUDA headers (PyPI nvidia-nccl-cu13, nvidia-cuda-crt, nvidia-cuda-cccl, which \
             scripts/setup.sh installs) were missing when it was built"
                .into(),
        ))
    }
}

#[cfg(not(mg_nccl))]
impl crate::distributed::Collective for Nccl {
    fn rank(&self) -> usize {
        match self.never {}
    }
    fn world_size(&self) -> usize {
        match self.never {}
    }
    fn backend(&self) -> &'static str {
        "nccl"
    }
    fn all_reduce_sum(&mut self, _: &[tch::Tensor]) -> Result<()> {
        match self.never {}
    }
    fn all_reduce_sum_group(&mut self, _: &[tch::Tensor], _: &[usize]) -> Result<()> {
        match self.never {}
    }
    fn create_group(&mut self, _: &[usize]) -> Result<()> {
        match self.never {}
    }
    fn broadcast(&mut self, _: &[tch::Tensor], _: usize) -> Result<()> {
        match self.never {}
    }
    fn barrier(&mut self) -> Result<()> {
        match self.never {}
    }
    fn all_gather_f64(&mut self, _: &[f64]) -> Result<Vec<Vec<f64>>> {
        match self.never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> Launch {
        Launch {
            master_addr: Some("10.0.0.1".into()),
            master_port: Some(29500),
            world_size: 2,
            ..Launch::single()
        }
    }

    #[test]
    fn init_methods() {
        let l = launch();
        let tcp = |h: &str, p| InitMethod::Tcp {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            parse_init_method("env://", &l).unwrap(),
            (tcp("10.0.0.1", 29500), false)
        );
        let agent = Launch {
            agent_store: true,
            ..launch()
        };
        assert_eq!(
            parse_init_method("env://", &agent).unwrap(),
            (tcp("10.0.0.1", 29500), true)
        );
        assert_eq!(
            parse_init_method("tcp://host:123", &agent).unwrap(),
            (tcp("host", 123), false)
        );
        assert_eq!(
            parse_init_method("tcp://[::1]:7?x=1", &l).unwrap(),
            (tcp("::1", 7), false)
        );
        assert_eq!(
            parse_init_method("file:///tmp/x", &l).unwrap(),
            (InitMethod::File("/tmp/x".into()), false)
        );
        for bad in [
            "tcp://host",
            "tcp://:1",
            "tcp://h:x",
            "file://",
            "udp://h:1",
        ] {
            assert!(matches!(
                parse_init_method(bad, &l),
                Err(Error::InvalidArgument(_))
            ));
        }
        assert!(parse_init_method("env://", &Launch::single()).is_err());
    }
}

#[cfg(test)]
mod environment_tests {
    use super::nccl_environment_warnings;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn settings_that_keep_a_dead_peers_job_alive_are_named() {
        assert!(nccl_environment_warnings(env(&[])).is_empty());
        assert!(
            nccl_environment_warnings(env(&[("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")])).is_empty()
        );
        let w = nccl_environment_warnings(env(&[("TORCH_NCCL_ASYNC_ERROR_HANDLING", "0")]));
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("TORCH_NCCL_ASYNC_ERROR_HANDLING=0"),
            "{w:?}"
        );
        // The old name is read too, the new one first.
        let w = nccl_environment_warnings(env(&[("NCCL_ASYNC_ERROR_HANDLING", "2")]));
        assert!(w[0].starts_with("NCCL_ASYNC_ERROR_HANDLING=2"), "{w:?}");
        let w = nccl_environment_warnings(env(&[("TORCH_NCCL_BLOCKING_WAIT", "1")]));
        assert!(w[0].contains("BLOCKING_WAIT"), "{w:?}");
    }
}
