//! The trainer's only window onto other processes: a small collective interface with one
//! implementation per engine (MPI for CPU ranks, NCCL through c10d for CUDA ranks), the launch
//! conventions users already know (torchrun, Slurm's srun, mpirun) and a watchdog so that a
//! rank that dies or hangs ends the others instead of leaving them waiting forever.
//!
//! No collective is written here: every byte moves through an engine others trust.

#[cfg(mg_c10d)]
pub mod c10d;
// The shim in c10d.cpp is built whenever libtorch is (build.rs), so sync BN always is.
pub mod environment;
#[cfg(feature = "mpi")]
mod mpi;
pub mod signals;
pub mod sync_bn;
mod watchdog;

use std::time::Duration;

use tch::{Device, Tensor};

use crate::error::{Error, Result};
pub use environment::{Launch, Launcher};
pub use watchdog::Watchdog;

/// What every engine offers the trainer. Every rank must issue the same calls in the same order
/// with tensors of the same sizes; the trainer guarantees it by walking parameters by name.
pub trait Collective: Send {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// `mpi`, `nccl` or `none` (one process).
    fn backend(&self) -> &'static str;
    /// Sums each tensor over all ranks, in place. Every reduction is issued before any is
    /// waited on, so the engine can overlap them. Tensors are contiguous, of one kind, on the
    /// rank's device.
    fn all_reduce_sum(&mut self, tensors: &[Tensor]) -> Result<()>;
    /// Sums each tensor over the ranks of `group` (ascending rank numbers that include this
    /// rank), in place. Sync BN pools statistics over such groups.
    fn all_reduce_sum_group(&mut self, tensors: &[Tensor], group: &[usize]) -> Result<()>;
    /// Makes the sub-communicator of `group` (ascending ranks that include this one) now, so
    /// that a failure to create it comes at start rather than in a training step. Collective:
    /// every rank calls it, each with its own group, as many times and in the same order.
    fn create_group(&mut self, group: &[usize]) -> Result<()>;
    /// Starts summing `tensor` (contiguous, on the rank's device) over all ranks in place and
    /// returns without waiting: the sum is complete once [`Collective::wait_started`] returns.
    /// Every rank must start the same sums in the same order. An engine without non-blocking
    /// collectives sums at once (the default).
    fn start_all_reduce_sum(&mut self, tensor: &Tensor) -> Result<()> {
        self.all_reduce_sum(std::slice::from_ref(tensor))
    }
    /// Completes every sum [`Collective::start_all_reduce_sum`] started, in the order started
    /// (on CUDA the current stream waits for them, not the host).
    fn wait_started(&mut self) -> Result<()> {
        Ok(())
    }
    /// Overwrites each tensor with rank `root`'s.
    fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<()>;
    fn barrier(&mut self) -> Result<()>;
    /// Every rank's `values` in rank order; all ranks pass the same length.
    fn all_gather_f64(&mut self, values: &[f64]) -> Result<Vec<Vec<f64>>>;
}

/// Which engine moves the data (`run.dist_backend`): NCCL for CUDA devices and MPI for the CPU
/// with `Auto`.
pub use crate::schedule::DistBackend as Backend;

impl Backend {
    /// A backend named by a caller of the C API: "" is `auto`.
    pub fn parse(name: &str) -> Result<Backend> {
        if name.is_empty() {
            return Ok(Backend::Auto);
        }
        name.parse()
            .map_err(|e| Error::InvalidArgument(format!("distributed backend {e}")))
    }
}

/// Explicit distributed settings; every field left `None` comes from the launcher's
/// environment (see [`Launch::from_env`]).
#[derive(Debug, Clone)]
pub struct DistOptions {
    pub backend: Backend,
    /// `env://` (MASTER_ADDR / MASTER_PORT), `tcp://host:port` or `file:///path`. NCCL only:
    /// MPI has its own rendezvous.
    pub init_method: String,
    pub rank: Option<usize>,
    pub world_size: Option<usize>,
    pub local_rank: Option<usize>,
    pub local_world_size: Option<usize>,
    /// How long a collective may wait for the other ranks before this rank gives up.
    pub timeout: Duration,
}

impl Default for DistOptions {
    fn default() -> Self {
        DistOptions {
            backend: Backend::Auto,
            init_method: "env://".into(),
            rank: None,
            world_size: None,
            local_rank: None,
            local_world_size: None,
            // run.dist_timeout_s's default: one source for both.
            timeout: Duration::from_secs_f64(crate::schedule::RunConfig::default().dist_timeout_s),
        }
    }
}

impl DistOptions {
    /// The process's place in the job: explicit fields first, then the launcher's environment,
    /// else a single process.
    pub fn resolve(&self) -> Result<Launch> {
        let env = Launch::from_env()?;
        let mut l = env.clone().unwrap_or_else(Launch::single);
        if let Some(w) = self.world_size {
            l.world_size = w;
        }
        if let Some(r) = self.rank {
            l.rank = r;
        }
        if let Some(r) = self.local_rank {
            l.local_rank = r;
        }
        if let Some(w) = self.local_world_size {
            l.local_world_size = w;
        }
        if self.world_size.is_some() && self.local_world_size.is_none() && env.is_none() {
            l.local_world_size = l.world_size;
        }
        if self.world_size.is_some() && self.local_rank.is_none() && env.is_none() {
            l.local_rank = l.rank;
        }
        l.check()?;
        Ok(l)
    }
}

/// One process: every collective is the identity.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "none"
    }
    fn all_reduce_sum(&mut self, _: &[Tensor]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_group(&mut self, _: &[Tensor], _: &[usize]) -> Result<()> {
        Ok(())
    }
    fn create_group(&mut self, _: &[usize]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&mut self, _: &[Tensor], _: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }
    fn all_gather_f64(&mut self, values: &[f64]) -> Result<Vec<Vec<f64>>> {
        Ok(vec![values.to_vec()])
    }
}

/// The device a rank trains on: `cuda:LOCAL_RANK` when the run asks for CUDA (or `auto` finds
/// it), the CPU otherwise.
pub fn rank_device(requested: Device, launch: &Launch) -> Device {
    match requested {
        // Modulo the visible devices: a launcher that gives each rank its own GPU
        // (CUDA_VISIBLE_DEVICES, srun --gpus-per-task) leaves device 0 visible to every rank.
        Device::Cuda(_) if launch.world_size > 1 => {
            let visible = tch::Cuda::device_count().max(1) as usize;
            Device::Cuda(launch.local_rank % visible)
        }
        d => d,
    }
}

/// Connects this process to the job `launch` describes, on the engine that suits `device`.
pub fn connect(
    options: &DistOptions,
    launch: &Launch,
    device: Device,
) -> Result<Box<dyn Collective>> {
    // One process needs no engine, unless a launcher started it and the backend was named:
    // then the engine runs at world size 1 (how scripts/gpu-check.sh exercises NCCL on one GPU).
    if launch.world_size == 1
        && (options.backend == Backend::Auto || launch.launcher == Launcher::None)
    {
        return Ok(Box::new(Single));
    }
    let backend = match options.backend {
        Backend::Auto if device.is_cuda() => Backend::Nccl,
        Backend::Auto => Backend::Mpi,
        b => b,
    };
    match backend {
        Backend::Nccl => {
            if !device.is_cuda() {
                return Err(Error::InvalidArgument(
                    "the nccl backend needs CUDA devices; CPU ranks use mpi".into(),
                ));
            }
            connect_nccl(options, launch, device)
        }
        _ => {
            if device.is_cuda() {
                return Err(Error::InvalidArgument(
                    "the mpi backend moves CPU tensors; CUDA ranks use nccl".into(),
                ));
            }
            connect_mpi(options, launch)
        }
    }
}

#[cfg(mg_c10d)]
fn connect_nccl(
    options: &DistOptions,
    launch: &Launch,
    device: Device,
) -> Result<Box<dyn Collective>> {
    let Device::Cuda(index) = device else {
        unreachable!("checked by connect")
    };
    Ok(Box::new(c10d::Nccl::connect(options, launch, index)?))
}

#[cfg(not(mg_c10d))]
fn connect_nccl(_: &DistOptions, _: &Launch, _: Device) -> Result<Box<dyn Collective>> {
    Err(Error::Unsupported(
        "this libmultigrid was built without NCCL (libtorch without CUDA, or the CUDA headers \
         that the set-up installs were missing)"
            .into(),
    ))
}

#[cfg(feature = "mpi")]
fn connect_mpi(options: &DistOptions, launch: &Launch) -> Result<Box<dyn Collective>> {
    Ok(Box::new(mpi::Mpi::connect(options, launch)?))
}

#[cfg(not(feature = "mpi"))]
fn connect_mpi(_: &DistOptions, _: &Launch) -> Result<Box<dyn Collective>> {
    Err(Error::Unsupported(
        "this libmultigrid was built without MPI (feature `mpi`), which CPU ranks need".into(),
    ))
}

/// Ends the whole job after a fatal error on this rank, so no peer waits for it in a collective:
/// MPI_Abort under MPI (the launcher then stops every rank). Without MPI it returns, and the
/// caller exits non-zero, which torchrun and `--nproc-per-node` answer by stopping the others.
pub fn abort_job(code: i32) {
    #[cfg(feature = "mpi")]
    mpi::abort_if_running(code);
    let _ = code;
}

/// DDP's bucket sizes, the trainer's gradient buckets: the first small, so communication
/// starts early.
pub const FIRST_BUCKET_BYTES: usize = 1 << 20;
pub const BUCKET_BYTES: usize = 25 << 20;

/// Flattens `tensors` into buckets of about `first_bytes` (the first) and `bytes` (the rest),
/// in the given order, as DDP does: small first buckets start communication early.
pub fn buckets(
    sizes: &[usize],
    elem_bytes: usize,
    first_bytes: usize,
    bytes: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut filled = 0;
    for (i, &n) in sizes.iter().enumerate() {
        filled += n * elem_bytes;
        let cap = if out.is_empty() { first_bytes } else { bytes };
        if filled >= cap {
            out.push(start..i + 1);
            start = i + 1;
            filled = 0;
        }
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

/// Sums `tensors` (gradients, say) over ranks in buckets, each divided by the world size
/// first, so the result is the mean; f32 and f16 stay in range, as with DDP's gradient
/// pre-division. `tensors` are contiguous and of one kind.
pub fn all_reduce_mean_bucketed(
    comm: &mut dyn Collective,
    tensors: &[Tensor],
    first_bytes: usize,
    bytes: usize,
) -> Result<()> {
    let world = comm.world_size();
    if world == 1 || tensors.is_empty() {
        return Ok(());
    }
    let kind = tensors[0].kind();
    let elem = kind.elt_size_in_bytes();
    // A 0-dim tensor, not a scalar: tch's scalar overloads panic on a libtorch error.
    let world_t = crate::model::scalar(world as f64)?;
    let sizes: Vec<usize> = tensors.iter().map(|t| t.numel()).collect();
    let ranges = buckets(&sizes, elem, first_bytes, bytes);
    let mut flat = Vec::with_capacity(ranges.len());
    for r in &ranges {
        let views: Vec<Tensor> = tensors[r.clone()]
            .iter()
            .map(|t| t.f_reshape([-1]))
            .collect::<std::result::Result<_, _>>()?;
        let cat = Tensor::f_cat(&views, 0)?;
        let mut cat = cat;
        let _ = cat.f_div_(&world_t)?;
        flat.push(cat);
    }
    comm.all_reduce_sum(&flat)?;
    tch::no_grad(|| -> Result<()> {
        for (r, bucket) in ranges.iter().zip(&flat) {
            let mut offset = 0i64;
            for t in &tensors[r.clone()] {
                let n = t.numel() as i64;
                let part = bucket.f_narrow(0, offset, n)?;
                t.shallow_clone().f_copy_(&part.f_view_as(t)?)?;
                offset += n;
            }
        }
        Ok(())
    })?;
    Ok(())
}
