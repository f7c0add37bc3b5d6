//! CPU ranks through MPI (Open MPI on Debian; any MPI the `mpi` crate builds against).
//!
//! MPI is initialised once per process, with MPI_THREAD_SERIALIZED since a trainer may move
//! between threads, and finalised at exit: MPI cannot be initialised twice, so a second trainer
//! in the same process reuses the world communicator.

use std::collections::HashMap;
use std::sync::OnceLock;

use mpi::collective::SystemOperation;
use mpi::request::{Request, StaticScope};
use mpi::topology::{Color, Communicator, SimpleCommunicator};
use mpi::traits::*;
use parking_lot::Mutex;
use tch::{Device, Kind, Tensor};

use super::{Collective, DistOptions, Launch, Watchdog};
use crate::error::{Error, Result};

/// The world communicator; MPI handles are plain integers or pointers owned by the library.
struct World(SimpleCommunicator);
// SAFETY: MPI is initialised with MPI_THREAD_SERIALIZED, which allows calls from any thread as
// long as no two overlap; every use goes through `Mpi`, whose methods take `&mut self`.
unsafe impl Send for World {}

static WORLD: OnceLock<std::result::Result<Mutex<Option<World>>, String>> = OnceLock::new();

extern "C" fn finalize_at_exit() {
    // SAFETY: called once by libc at exit, after `initialize` succeeded.
    unsafe {
        let mut done = 0;
        mpi::ffi::MPI_Finalized(&mut done);
        if done == 0 {
            mpi::ffi::MPI_Finalize();
        }
    }
}

fn world() -> Result<SimpleCommunicator> {
    let cell = WORLD.get_or_init(|| {
        match mpi::initialize_with_threading(mpi::Threading::Serialized) {
            Some((universe, _)) => {
                let w = universe.world();
                // The universe would finalise MPI when dropped; MPI lives as long as the process.
                std::mem::forget(universe);
                // SAFETY: registering a plain extern "C" function.
                unsafe { libc::atexit(finalize_at_exit) };
                Ok(Mutex::new(Some(World(w))))
            }
            None => Err("MPI was already initialised by someone else in this process".into()),
        }
    });
    match cell {
        Ok(m) => m
            .lock()
            .as_ref()
            .map(|w| w.0.duplicate())
            .ok_or_else(|| Error::InvalidArgument("MPI world is gone".into())),
        Err(e) => Err(Error::Unsupported(e.clone())),
    }
}

/// MPI_Abort on the world when MPI is up with more than one rank.
pub(super) fn abort_if_running(code: i32) {
    let Some(Ok(m)) = WORLD.get() else {
        return;
    };
    if let Some(w) = m.lock().as_ref() {
        if w.0.size() > 1 {
            w.0.abort(code);
        }
    }
}

pub struct Mpi {
    comm: World,
    rank: usize,
    size: usize,
    /// Sub-communicators for sync-BN groups, keyed by their ranks.
    groups: HashMap<Vec<usize>, World>,
    watchdog: Watchdog,
    /// Sums started by `start_all_reduce_sum`, not yet waited for.
    started: Vec<Started>,
}

impl Mpi {
    pub fn connect(options: &DistOptions, launch: &Launch) -> Result<Mpi> {
        if !launch.under_mpi {
            return Err(Error::InvalidArgument(format!(
                "CPU ranks communicate through MPI, so they must be started by an MPI launcher \
                 (mpirun -np {w} ..., srun --mpi=pmix ..., or `multigrid train --nproc-per-node {w}` \
                 on one machine); {} cannot start MPI ranks",
                launch.launcher.name(),
                w = launch.world_size,
            )));
        }
        let comm = world()?;
        let (rank, size) = (comm.rank() as usize, comm.size() as usize);
        if rank != launch.rank || size != launch.world_size {
            return Err(Error::InvalidArgument(format!(
                "MPI says rank {rank} of {size}, the settings say rank {} of {}",
                launch.rank, launch.world_size
            )));
        }
        Ok(Mpi {
            comm: World(comm),
            rank,
            size,
            groups: HashMap::new(),
            watchdog: Watchdog::new(rank, size, options.timeout),
            started: Vec::new(),
        })
    }
}

fn check_cpu(t: &Tensor) -> Result<()> {
    if t.device() != Device::Cpu || !t.is_contiguous() {
        return Err(Error::InvalidArgument(
            "the mpi backend takes contiguous CPU tensors".into(),
        ));
    }
    Ok(())
}

/// A tensor's storage as a slice of T.
///
/// # Safety
/// `t` is a contiguous CPU tensor of T's kind, and nothing else reads or writes its storage
/// while the slice lives; the slice must not outlive the tensor.
unsafe fn storage<'a, T>(t: &Tensor) -> &'a mut [T] {
    std::slice::from_raw_parts_mut(t.data_ptr().cast::<T>(), t.numel())
}

/// Starts a non-blocking sum of every (send, receive) pair; the caller waits on the requests.
fn issue<'a, T, S>(
    comm: &SimpleCommunicator,
    scope: S,
    pairs: &'a mut [(Vec<T>, &mut [T])],
) -> Vec<mpi::request::Request<'a, [T], S>>
where
    T: mpi::datatype::Equivalence + 'a,
    S: mpi::request::Scope<'a> + Copy,
{
    pairs
        .iter_mut()
        .map(|(send, recv)| {
            comm.immediate_all_reduce_into(scope, &send[..], &mut recv[..], SystemOperation::sum())
        })
        .collect()
}

/// A non-blocking sum in flight: MPI reads `send` and writes into the tensor's storage until
/// the request completes, so both live here until then. Dropping it waits.
struct InFlight<T: mpi::datatype::Equivalence + 'static> {
    request: Option<Request<'static, [T], StaticScope>>,
    /// A leaked box, freed once the request is complete.
    send: *mut [T],
    _tensor: Tensor,
}

impl<T: mpi::datatype::Equivalence + Copy + 'static> InFlight<T> {
    /// # Safety
    /// `t` is a contiguous CPU tensor of T's kind whose storage nothing else touches until the
    /// returned value is waited for or dropped.
    unsafe fn start(comm: &SimpleCommunicator, t: &Tensor) -> InFlight<T> {
        let recv: &'static mut [T] = storage::<T>(t);
        let send: &'static [T] = Box::leak(recv.to_vec().into_boxed_slice());
        let send_ptr = send as *const [T] as *mut [T];
        let request =
            comm.immediate_all_reduce_into(StaticScope, send, recv, SystemOperation::sum());
        InFlight {
            request: Some(request),
            send: send_ptr,
            _tensor: t.shallow_clone(),
        }
    }

    /// Lets MPI move the sum on (Open MPI progresses non-blocking collectives only inside MPI
    /// calls).
    fn progress(&mut self) {
        if let Some(r) = self.request.take() {
            self.request = r.test().err();
        }
    }

    fn wait(&mut self) {
        if let Some(r) = self.request.take() {
            r.wait_without_status();
        }
    }
}

impl<T: mpi::datatype::Equivalence + 'static> Drop for InFlight<T> {
    fn drop(&mut self) {
        if let Some(r) = self.request.take() {
            r.wait_without_status();
        }
        // SAFETY: `send` came from Box::leak in `start`, and MPI no longer reads it.
        drop(unsafe { Box::from_raw(self.send) });
    }
}

enum Started {
    F32(InFlight<f32>),
    F64(InFlight<f64>),
}

// SAFETY: the request and buffers are used only through `&mut Mpi` (MPI_THREAD_SERIALIZED
// allows any thread, one at a time), and nothing else holds the leaked send buffer.
unsafe impl Send for Started {}

impl Started {
    fn progress(&mut self) {
        match self {
            Started::F32(f) => f.progress(),
            Started::F64(f) => f.progress(),
        }
    }
    fn wait(&mut self) {
        match self {
            Started::F32(f) => f.wait(),
            Started::F64(f) => f.wait(),
        }
    }
}

/// Contiguous CPU tensors of f32 or f64, what the bindings reduce.
fn check_reducible(tensors: &[Tensor]) -> Result<()> {
    for t in tensors {
        check_cpu(t)?;
        if !matches!(t.kind(), Kind::Float | Kind::Double) {
            return Err(Error::InvalidArgument(format!(
                "the mpi backend reduces f32 and f64 tensors, not {:?}",
                t.kind()
            )));
        }
    }
    Ok(())
}

fn reduce_on(comm: &SimpleCommunicator, tensors: &[Tensor]) -> Result<()> {
    check_reducible(tensors)?;
    // MPI_IN_PLACE is not portable through the bindings, so each tensor's values are copied
    // into a send buffer and reduced back into the tensor.
    let mut f32s: Vec<(Vec<f32>, &mut [f32])> = Vec::new();
    let mut f64s: Vec<(Vec<f64>, &mut [f64])> = Vec::new();
    for t in tensors.iter().filter(|t| t.numel() > 0) {
        // SAFETY: contiguous CPU tensors of the matching kind (checked above); each is reduced
        // into once, and the caller does not touch them until this returns.
        unsafe {
            if t.kind() == Kind::Double {
                let recv = storage::<f64>(t);
                f64s.push((recv.to_vec(), recv));
            } else {
                let recv = storage::<f32>(t);
                f32s.push((recv.to_vec(), recv));
            }
        }
    }
    mpi::request::scope(|scope| {
        let a = issue(comm, scope, &mut f32s);
        let b = issue(comm, scope, &mut f64s);
        a.into_iter().for_each(|r| r.wait_without_status());
        b.into_iter().for_each(|r| r.wait_without_status());
    });
    Ok(())
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn backend(&self) -> &'static str {
        "mpi"
    }

    fn all_reduce_sum(&mut self, tensors: &[Tensor]) -> Result<()> {
        let _watch = self.watchdog.watch("all-reduce");
        reduce_on(&self.comm.0, tensors)
    }

    fn start_all_reduce_sum(&mut self, tensor: &Tensor) -> Result<()> {
        check_reducible(std::slice::from_ref(tensor))?;
        for s in &mut self.started {
            s.progress();
        }
        if tensor.numel() == 0 {
            return Ok(());
        }
        // SAFETY: a contiguous CPU tensor of the matching kind (checked); the caller leaves it
        // alone until `wait_started`, and `self.started` keeps it alive until then.
        let started = unsafe {
            if tensor.kind() == Kind::Double {
                Started::F64(InFlight::start(&self.comm.0, tensor))
            } else {
                Started::F32(InFlight::start(&self.comm.0, tensor))
            }
        };
        self.started.push(started);
        Ok(())
    }

    fn wait_started(&mut self) -> Result<()> {
        if self.started.is_empty() {
            return Ok(());
        }
        let _watch = self.watchdog.watch("gradient all-reduce");
        for mut s in self.started.drain(..) {
            s.wait();
        }
        Ok(())
    }

    fn all_reduce_sum_group(&mut self, tensors: &[Tensor], group: &[usize]) -> Result<()> {
        if !group.contains(&self.rank) {
            return Err(Error::InvalidArgument(format!(
                "rank {} is not in the group {group:?}",
                self.rank
            )));
        }
        if group.len() == self.size {
            return self.all_reduce_sum(tensors);
        }
        // The trainer made its groups at start; another caller's are made on first use.
        self.create_group(group)?;
        let _watch = self.watchdog.watch("group all-reduce");
        reduce_on(&self.groups[group].0, tensors)
    }

    fn create_group(&mut self, group: &[usize]) -> Result<()> {
        if !group.contains(&self.rank) {
            return Err(Error::InvalidArgument(format!(
                "rank {} is not in the group {group:?}",
                self.rank
            )));
        }
        if self.groups.contains_key(group) || group.len() == self.size {
            return Ok(());
        }
        let _watch = self.watchdog.watch("creating a sync-BN group");
        // Collective over the world: every rank splits at once, each into its own group.
        let color = Color::with_value(group[0] as i32);
        let sub = self
            .comm
            .0
            .split_by_color(color)
            .ok_or_else(|| Error::InvalidArgument("MPI could not split the world".into()))?;
        if sub.size() as usize != group.len() {
            return Err(Error::InvalidArgument(format!(
                "the group {group:?} is not the same on every rank"
            )));
        }
        self.groups.insert(group.to_vec(), World(sub));
        Ok(())
    }

    fn broadcast(&mut self, tensors: &[Tensor], root: usize) -> Result<()> {
        let _watch = self.watchdog.watch("broadcast");
        let root = self.comm.0.process_at_rank(root as i32);
        for t in tensors.iter().filter(|t| t.numel() > 0) {
            check_cpu(t)?;
            // SAFETY: contiguous CPU tensor (checked), broadcast as raw bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(
                    t.data_ptr().cast::<u8>(),
                    t.numel() * t.kind().elt_size_in_bytes(),
                )
            };
            root.broadcast_into(bytes);
        }
        Ok(())
    }

    fn barrier(&mut self) -> Result<()> {
        let _watch = self.watchdog.watch("barrier");
        self.comm.0.barrier();
        Ok(())
    }

    fn all_gather_f64(&mut self, values: &[f64]) -> Result<Vec<Vec<f64>>> {
        let _watch = self.watchdog.watch("all-gather");
        let mut out = vec![0f64; values.len() * self.size];
        self.comm.0.all_gather_into(values, &mut out[..]);
        Ok(out
            .chunks(values.len().max(1))
            .take(self.size)
            .map(<[f64]>::to_vec)
            .collect())
    }
}
