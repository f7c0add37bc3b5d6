//! CUDA graphs per multigrid shape (`run.cuda_graphs`). A multigrid run has a handful of
//! fixed shapes, each repeated thousands of times: after two eager steps at a (shape, BN
//! groups), the whole step (forward under autocast, backward, SGD) is captured once and
//! replayed for every later step of it, its batch copied into the graph's static inputs. The
//! graphs share one memory pool; the learning rate reaches the captured SGD through a device
//! scalar, and dropout stays correct because the capture registers libtorch's default CUDA
//! generator (its seed and offset are read at each replay).
//!
//! Only one process on CUDA, in bf16 or fp32: fp16's loss scaler reads the gradients back to
//! the host, and several ranks' collectives run outside graphs here. A capture that fails is
//! reported once, with the reason, and every step then runs eagerly: never a wrong result.

use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr::NonNull;

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// Eager steps at a shape before it is captured: the first pays cuDNN's autotuning and the
/// allocator's growth, which must not happen inside a capture.
pub const EAGER_STEPS_BEFORE_CAPTURE: u32 = 2;

/// (slow shape, fast shape, labels' shape and kind, BN groups): what a graph is fixed to.
type Key = (Vec<i64>, Vec<i64>, Vec<i64>, Kind, i64);

pub(super) fn key(slow: &Tensor, fast: &Tensor, labels: &Tensor, bn_groups: i64) -> Key {
    (
        slow.size(),
        fast.size(),
        labels.size(),
        labels.kind(),
        bn_groups,
    )
}

/// Why graphs cannot serve this run, or None when they can.
pub(super) fn unsupported(device: Device, fp16: bool, distributed: bool) -> Option<String> {
    if !device.is_cuda() {
        return Some(format!(
            "run.cuda_graphs needs a CUDA device; this run is on {device:?}"
        ));
    }
    if !cfg!(mg_nccl) {
        return Some(
            "run.cuda_graphs: this build has no CUDA headers (built without libtorch_cuda)".into(),
        );
    }
    if fp16 {
        return Some(
            "run.cuda_graphs: fp16's loss scaler checks the gradients on the host every step; \
             use bf16 or fp32 to capture steps"
                .into(),
        );
    }
    if distributed {
        return Some(
            "run.cuda_graphs captures one process's steps; with a collective engine the steps \
             run eagerly"
                .into(),
        );
    }
    None
}

/// One captured step with its static inputs and output.
pub(super) struct Captured {
    graph: Graph,
    slow: Tensor,
    fast: Tensor,
    labels: Tensor,
    loss: Tensor,
}

impl Captured {
    /// Copies the batch into the static inputs and runs the step; returns the loss, copied out
    /// of the graph's memory (the next replay of any graph may reuse it).
    pub(super) fn replay(&self, slow: &Tensor, fast: &Tensor, labels: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| -> Result<()> {
            self.slow.shallow_clone().f_copy_(slow)?;
            self.fast.shallow_clone().f_copy_(fast)?;
            self.labels.shallow_clone().f_copy_(labels)?;
            Ok(())
        })?;
        self.graph.replay()?;
        Ok(self.loss.f_detach_copy()?)
    }
}

/// The run's graphs: one per key, the eager steps seen per key, the shared pool, the device
/// learning rate, and the reason graphs stopped, if they did.
pub(super) struct StepGraphs {
    graphs: HashMap<Key, Captured>,
    eager: HashMap<Key, u32>,
    pool: Option<(u64, u64)>,
    /// The learning rate every captured SGD reads: a 0-dim f32 tensor on the device.
    pub(super) lr: Tensor,
    pub(super) disabled: Option<String>,
}

/// What to do for a step.
pub(super) enum Next<'a> {
    Replay(&'a Captured),
    Eager,
    Capture,
}

impl StepGraphs {
    pub(super) fn new(device: Device) -> Result<StepGraphs> {
        Ok(StepGraphs {
            graphs: HashMap::new(),
            eager: HashMap::new(),
            pool: None,
            lr: Tensor::f_zeros([], (Kind::Float, device))?,
            disabled: None,
        })
    }

    /// Sets the device learning rate for the next step (a kernel: nothing waits).
    pub(super) fn set_lr(&self, lr: f64) -> Result<()> {
        fill(&self.lr, lr)
    }

    /// Replay, an eager step (counted), or capture now.
    pub(super) fn next(&mut self, key: &Key) -> Next<'_> {
        if self.disabled.is_some() {
            return Next::Eager;
        }
        if let Some(c) = self.graphs.get(key) {
            return Next::Replay(c);
        }
        let seen = self.eager.entry(key.clone()).or_insert(0);
        if *seen < EAGER_STEPS_BEFORE_CAPTURE {
            *seen += 1;
            return Next::Eager;
        }
        Next::Capture
    }

    /// Drops every graph: the tensors they were captured on (parameters' storage, gradient
    /// buckets) were replaced. Shapes are captured again after their eager steps.
    pub(super) fn clear(&mut self) {
        self.graphs.clear();
        self.eager.clear();
    }

    /// How many shapes have a graph.
    pub(super) fn captured(&self) -> usize {
        self.graphs.len()
    }

    /// Captures `step` (which queues one training step on the current stream and returns its
    /// loss) on copies of the batch, then replays it once: the step's work is done either way.
    /// `Ok(None)`: the capture failed; graphs are off from now on (the reason is in
    /// `disabled`, also printed) and nothing ran, so the caller steps eagerly.
    pub(super) fn capture(
        &mut self,
        key: Key,
        device: Device,
        (slow, fast, labels): (&Tensor, &Tensor, &Tensor),
        step: impl FnOnce(&Tensor, &Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Option<Tensor>> {
        // Static inputs: ordinary allocations, outside the graphs' pool.
        let statics = tch::no_grad(|| -> Result<(Tensor, Tensor, Tensor)> {
            Ok((
                slow.f_detach_copy()?,
                fast.f_detach_copy()?,
                labels.f_detach_copy()?,
            ))
        })?;
        let pool = match self.pool {
            Some(p) => p,
            None => {
                let p = graph_pool()?;
                self.pool = Some(p);
                p
            }
        };
        let Device::Cuda(index) = device else {
            return Err(Error::InvalidArgument(format!(
                "CUDA graphs need a CUDA device, not {device:?}"
            )));
        };
        let captured = Graph::capture(index, Some(pool), || {
            step(&statics.0, &statics.1, &statics.2, &self.lr)
        });
        let (graph, loss) = match captured {
            Ok(done) => done,
            Err(e) => {
                let reason = format!(
                    "CUDA graph capture of the step at inputs {:?} / {:?} failed, every step now \
                     runs eagerly: {e}",
                    key.0, key.1
                );
                eprintln!("multigrid: warning: {reason}");
                self.disabled = Some(reason);
                return Ok(None);
            }
        };
        let captured = Captured {
            graph,
            slow: statics.0,
            fast: statics.1,
            labels: statics.2,
            loss,
        };
        captured.graph.replay()?;
        let out = captured.loss.f_detach_copy()?;
        self.graphs.insert(key, captured);
        Ok(Some(out))
    }
}

/// A libtorch CUDAGraph (through the bridge), freed on drop.
pub struct Graph(NonNull<c_void>);

// SAFETY: the graph is owned by this value and used through it alone; CUDA graphs may be
// replayed from any host thread.
unsafe impl Send for Graph {}

impl Drop for Graph {
    fn drop(&mut self) {
        #[cfg(mg_nccl)]
        // SAFETY: a handle from mgb_graph_new, freed once, here.
        unsafe {
            crate::bridge::mgb_graph_free(self.0.as_ptr())
        }
    }
}

impl Graph {
    /// Captures the CUDA work `body` queues on CUDA device `device` (on a side stream, with
    /// autocast's cast cache off) into a graph whose memory comes from `pool` (shared with the
    /// graphs captured from the same pool; None: a pool of its own). Nothing runs until
    /// [`Graph::replay`]. The work must be capturable: no host synchronisation, no new
    /// allocations outside the graph that it keeps; warm it up eagerly first.
    pub fn capture<T>(
        device: usize,
        pool: Option<(u64, u64)>,
        body: impl FnOnce() -> Result<T>,
    ) -> Result<(Graph, T)> {
        let pool = match pool {
            Some(p) => p,
            None => graph_pool()?,
        };
        let graph = Graph::new()?;
        graph.begin(device as i64, pool)?;
        let out = body();
        let ended = graph.end();
        match (out, ended) {
            (Ok(out), Ok(())) => Ok((graph, out)),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        }
    }

    /// Runs the captured work on the current stream.
    pub fn replay(&self) -> Result<()> {
        self.run()
    }
}

#[cfg(mg_nccl)]
mod ops {
    use super::*;
    use crate::bridge::{
        self, mgb_graph_capture_begin, mgb_graph_capture_end, mgb_graph_new, mgb_graph_pool,
        mgb_graph_replay,
    };

    pub(super) fn graph_pool() -> Result<(u64, u64)> {
        let (mut a, mut b) = (0u64, 0u64);
        // SAFETY: both outputs are written only on success.
        bridge::call("CUDA graph pool", |e, l| unsafe {
            mgb_graph_pool(&mut a, &mut b, e, l)
        })?;
        Ok((a, b))
    }

    impl Graph {
        pub(super) fn new() -> Result<Graph> {
            let mut out = std::ptr::null_mut();
            // SAFETY: `out` is written only on success.
            bridge::call("CUDA graph", |e, l| unsafe {
                mgb_graph_new(&mut out, e, l)
            })?;
            NonNull::new(out)
                .map(Graph)
                .ok_or_else(|| Error::Torch("libtorch returned no CUDA graph".into()))
        }

        pub(super) fn begin(&self, device: i64, (a, b): (u64, u64)) -> Result<()> {
            // SAFETY: a live graph handle.
            bridge::call("CUDA graph capture", |e, l| unsafe {
                mgb_graph_capture_begin(self.0.as_ptr(), device, a, b, e, l)
            })
        }

        pub(super) fn end(&self) -> Result<()> {
            // SAFETY: a live graph handle.
            bridge::call("CUDA graph capture", |e, l| unsafe {
                mgb_graph_capture_end(self.0.as_ptr(), e, l)
            })
        }

        pub(super) fn run(&self) -> Result<()> {
            // SAFETY: a live graph handle.
            bridge::call("CUDA graph replay", |e, l| unsafe {
                mgb_graph_replay(self.0.as_ptr(), e, l)
            })
        }
    }
}

#[cfg(not(mg_nccl))]
mod ops {
    use super::*;

    fn no_cuda() -> Error {
        Error::CudaUnavailable("this build has no CUDA graphs (no CUDA headers)".into())
    }

    pub(super) fn graph_pool() -> Result<(u64, u64)> {
        Err(no_cuda())
    }

    impl Graph {
        pub(super) fn new() -> Result<Graph> {
            Err(no_cuda())
        }
        pub(super) fn begin(&self, _: i64, _: (u64, u64)) -> Result<()> {
            Err(no_cuda())
        }
        pub(super) fn end(&self) -> Result<()> {
            Err(no_cuda())
        }
        pub(super) fn run(&self) -> Result<()> {
            Err(no_cuda())
        }
    }
}

use ops::graph_pool;

/// `t` = v everywhere, as a kernel on t's device: no copy from the host, so nothing waits.
fn fill(t: &Tensor, v: f64) -> Result<()> {
    crate::bridge::call("fill", |e, l| {
        // SAFETY: a live tensor handle for the call.
        unsafe { crate::bridge::mgb_fill(t.as_ptr(), v, e, l) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shape_steps_eagerly_twice_then_is_captured() {
        let mut g = StepGraphs::new(Device::Cpu).unwrap();
        let t = |n| Tensor::zeros([n, 3, 2, 8, 8], (Kind::Float, Device::Cpu));
        let labels = Tensor::zeros([4], (Kind::Int64, Device::Cpu));
        let a = key(&t(4), &t(4), &labels, 2);
        let b = key(&t(4), &t(4), &labels, 1);
        assert_ne!(a, b, "BN groups are part of the key");
        for _ in 0..EAGER_STEPS_BEFORE_CAPTURE {
            assert!(matches!(g.next(&a), Next::Eager));
        }
        assert!(matches!(g.next(&b), Next::Eager), "counted per key");
        assert!(matches!(g.next(&a), Next::Capture));
        g.disabled = Some("a reason".into());
        assert!(
            matches!(g.next(&a), Next::Eager),
            "off for good after a failure"
        );
        assert_eq!(g.captured(), 0);
    }

    #[test]
    fn graphs_say_why_a_run_cannot_use_them() {
        let cpu = unsupported(Device::Cpu, false, false).unwrap();
        assert!(cpu.contains("needs a CUDA device"), "{cpu}");
        let fp16 = unsupported(Device::Cuda(0), true, false).unwrap();
        if cfg!(mg_nccl) {
            assert!(fp16.contains("fp16"), "{fp16}");
            let ranks = unsupported(Device::Cuda(0), false, true).unwrap();
            assert!(ranks.contains("collective"), "{ranks}");
            assert!(unsupported(Device::Cuda(0), false, false).is_none());
        }
    }

    #[test]
    fn the_device_learning_rate_is_set_without_a_host_copy() {
        let g = StepGraphs::new(Device::Cpu).unwrap();
        g.set_lr(0.125).unwrap();
        assert_eq!(g.lr.double_value(&[]), 0.125);
    }
}
