//! The all-reduce inside sync BN's forward pass, differentiable: the statistics every rank of a
//! group normalises with depend on every rank's clips, so their gradient is summed over the
//! group in the backward pass too (pytorchvideo's NaiveSyncBatchNorm3d, which PySlowFast uses).
//! tch cannot define an autograd function, so the C++ bridge (src/bridge/) does, calling back here.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void};

use tch::Tensor;
use torch_sys::C_tensor;

use super::Collective;
use crate::bridge::mgb_differentiable_all_reduce;
use crate::error::{Error, Result};
use crate::model::bn::SyncStats;

/// Sync BN over one group of ranks for one training step. It borrows the trainer's collective
/// for as long as it lives, which must cover the step's backward pass: the autograd graph
/// calls back into it there.
pub struct GroupStats<'a> {
    comm: RefCell<&'a mut dyn Collective>,
    group: Vec<usize>,
    /// The first failure of a reduction inside the forward pass, which cannot return one.
    error: RefCell<Option<Error>>,
}

impl<'a> GroupStats<'a> {
    /// Groups of `size` consecutive ranks (the ranks of one machine are consecutive under
    /// torchrun, srun and mpirun's default mapping, as PySlowFast's sync BN assumes).
    pub fn new(comm: &'a mut dyn Collective, size: usize) -> Result<GroupStats<'a>> {
        let (rank, world) = (comm.rank(), comm.world_size());
        if size == 0 || world % size != 0 {
            return Err(Error::InvalidArgument(format!(
                "sync BN over {size} ranks needs a world size that {size} divides, not {world}"
            )));
        }
        let first = rank / size * size;
        Ok(GroupStats {
            comm: RefCell::new(comm),
            group: (first..first + size).collect(),
            error: RefCell::new(None),
        })
    }

    /// The first reduction error of the forward pass, if any.
    pub fn take_error(&self) -> Option<Error> {
        self.error.borrow_mut().take()
    }

    fn sum(&self, x: &Tensor) -> Result<Tensor> {
        let mut err = vec![0u8; 1024];
        let mut out: *mut C_tensor = std::ptr::null_mut();
        // SAFETY: `x` is a live tensor; `self` outlives every call of `reduce` (see the type's
        // contract); the shim writes `out` only on success.
        let rc = unsafe {
            mgb_differentiable_all_reduce(
                x.as_ptr(),
                reduce,
                (self as *const GroupStats).cast_mut().cast(),
                &mut out,
                err.as_mut_ptr().cast(),
                err.len(),
            )
        };
        if rc != 0 || out.is_null() {
            let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
            return Err(Error::Torch(
                String::from_utf8_lossy(&err[..end]).into_owned(),
            ));
        }
        // SAFETY: a fresh tensor allocated by the shim, now owned here.
        Ok(unsafe { Tensor::from_ptr(out) })
    }
}

impl SyncStats for GroupStats<'_> {
    fn ranks(&self) -> usize {
        self.group.len()
    }

    fn all_reduce_mean(&self, x: &Tensor) -> Result<Tensor> {
        let sum = self.sum(x)?;
        Ok(sum.f_div(&crate::model::scalar(self.group.len() as f64)?)?)
    }
}

/// Called by the shim in the forward and the backward pass: sums `t` over the group in place.
extern "C" fn reduce(user: *mut c_void, t: *mut C_tensor, err: *mut c_char, len: usize) -> c_int {
    let run = || -> Result<()> {
        // SAFETY: `user` is the GroupStats that started the reduction and is still alive;
        // `t` is a live tensor of the shim's, which this handle shares and then releases.
        let stats = unsafe { &*(user as *const GroupStats) };
        let t = unsafe { Tensor::clone_from_ptr(t) };
        let mut comm = stats.comm.borrow_mut();
        comm.all_reduce_sum_group(&[t], &stats.group)
    };
    let message = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(())) => return 0,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "panic in the sync BN all-reduce".to_string(),
    };
    if !err.is_null() && len > 0 {
        let n = message.len().min(len - 1);
        // SAFETY: the shim passes a buffer of `len` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(message.as_ptr(), err.cast::<u8>(), n);
            *err.add(n) = 0;
        }
    }
    1
}
