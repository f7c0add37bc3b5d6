//! Gradients as views into a few flat buffers, DDP's `gradient_as_bucket_view`: each
//! parameter's `.grad` is a slice of one bucket, laid out with the parameter's own strides
//! (channels-last stays channels-last, so autograd's gradient layout contract holds), and
//! autograd accumulates into it in place. A bucket is then all-reduced as it is: no
//! concatenation before the collective and no copy back after it.
//!
//! Buckets follow the order backward produces gradients, the reverse of the order the model
//! creates its parameters (as DDP's first bucket assignment), in DDP's sizes: the first small
//! so that a collective can start early. The first backward records the order gradients really
//! come in; where it differs, the buckets are rebuilt once in that order (DDP's
//! rebuild_buckets).
//!
//! With several ranks the all-reduce overlaps backward, as DDP's reducer does: a hook on each
//! parameter's gradient accumulator (in the C++ bridge) counts the gradients of its bucket, and
//! the bucket's sum starts as soon as the last one is in, while backward goes on with the
//! layers below. Buckets start in order, so every rank issues the same collectives in the same
//! order; after backward only the wait for the last ones remains.

use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr::NonNull;

use parking_lot::Mutex;
use tch::{nn, Tensor};
use torch_sys::C_tensor;

use crate::bridge::{self, mgb_grad_hooks_free, mgb_grad_hooks_new, mgb_set_grad};
use crate::distributed::{self as dist, Collective};
use crate::error::{Error, Result};

pub struct GradBuckets {
    /// One flat buffer per bucket.
    flat: Vec<Tensor>,
    /// The parameters of each bucket, by name, in buffer order.
    names: Vec<Vec<String>>,
    /// Every trainable parameter, in the order the buckets were first laid out; the hooks
    /// report positions in this list.
    params: Vec<(String, Tensor)>,
    /// Positions in `params`, in the order the buckets hold them.
    layout: Vec<usize>,
    first_bytes: usize,
    bytes: usize,
    /// What the hooks update; boxed so its address, given to the bridge, stays put.
    state: Box<Mutex<HookState>>,
    /// The bridge's hooks, removed on drop (before `state` goes).
    hooks: Option<Hooks>,
}

struct Hooks(NonNull<c_void>);

// SAFETY: the hooks handle is only freed, once, by its owner; autograd may run the hooks on
// its own threads whoever owns the handle.
unsafe impl Send for Hooks {}

impl Drop for Hooks {
    fn drop(&mut self) {
        // SAFETY: a handle from mgb_grad_hooks_new, freed once, here.
        unsafe { mgb_grad_hooks_free(self.0.as_ptr()) }
    }
}

/// What the gradient hooks see: the bucket of each parameter, how many gradients each bucket
/// still waits for in this backward, and, while a backward overlaps its all-reduce, the
/// collective to start buckets on.
struct HookState {
    bucket_of: Vec<usize>,
    waiting: Vec<usize>,
    /// The next bucket to start: buckets start in order.
    next: usize,
    armed: Option<Armed>,
    /// The first failure of a collective started from a hook.
    error: Option<Error>,
    /// The order gradients became ready in the first backward, until it has been used.
    order: Option<Vec<usize>>,
    recording: bool,
}

struct Armed {
    /// The trainer's collective, borrowed by [`GradBuckets::arm`] until
    /// [`GradBuckets::finish`].
    comm: *mut (dyn Collective + 'static),
    world: Tensor,
    flat: Vec<Tensor>,
}

// SAFETY: `comm` is set by `arm` from a `&mut` the trainer gives up until `finish`, which takes
// it back before the caller can use the collective again; in between only hooks (inside
// backward, which the caller is blocked in) reach it, one at a time through the mutex.
unsafe impl Send for HookState {}

impl HookState {
    /// A parameter's gradient is in: record it, and start every bucket, in order, that is
    /// complete.
    fn ready(&mut self, index: usize) {
        if self.recording {
            let order = self.order.get_or_insert_with(Vec::new);
            if order.contains(&index) {
                // A second backward began: the first one's order is complete.
                self.recording = false;
            } else {
                order.push(index);
            }
        }
        let Some(&b) = self.bucket_of.get(index) else {
            return;
        };
        self.waiting[b] = self.waiting[b].saturating_sub(1);
        while self.next < self.waiting.len() && self.waiting[self.next] == 0 {
            if self.armed.is_none() {
                return;
            }
            let b = self.next;
            self.next += 1;
            self.start(b);
        }
    }

    /// Starts bucket `b`'s mean over ranks (pre-divided, as DDP's).
    fn start(&mut self, b: usize) {
        let Some(armed) = &self.armed else { return };
        if self.error.is_some() {
            return;
        }
        let bucket = &armed.flat[b];
        let started = tch::no_grad(|| bucket.shallow_clone().f_div_(&armed.world))
            .map_err(Error::from)
            // SAFETY: see `Armed::comm`: the trainer's collective, lent until `finish`.
            .and_then(|_| unsafe { (*armed.comm).start_all_reduce_sum(bucket) });
        if let Err(e) = started {
            self.error = Some(e);
        }
    }
}

/// The bridge's hook: parameter `index`'s gradient has been accumulated.
extern "C" fn on_ready(user: *mut c_void, index: usize) {
    // SAFETY: `user` is the boxed state of the GradBuckets that owns the hooks, which removes
    // them before the state is dropped.
    let state = unsafe { &*(user as *const Mutex<HookState>) };
    // Nothing may unwind into autograd's C++.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.lock().ready(index)));
}

impl GradBuckets {
    /// Gives every trainable parameter of `vs` a gradient (zeros) that is a view into a bucket
    /// of about `first_bytes` (the first) or `bytes` (the others).
    pub fn new(vs: &nn::VarStore, first_bytes: usize, bytes: usize) -> Result<GradBuckets> {
        let params = backward_order(vs);
        if let Some((_, first)) = params.first() {
            let kind = first.kind();
            if let Some((name, p)) = params.iter().find(|(_, p)| p.kind() != kind) {
                return Err(Error::InvalidArgument(format!(
                    "parameter {name} is {:?} where the others are {kind:?}: gradient buckets need one kind",
                    p.kind()
                )));
            }
        }
        let state = Box::new(Mutex::new(HookState {
            bucket_of: Vec::new(),
            waiting: Vec::new(),
            next: 0,
            armed: None,
            error: None,
            order: None,
            recording: true,
        }));
        let mut buckets = GradBuckets {
            flat: Vec::new(),
            names: Vec::new(),
            params,
            layout: Vec::new(),
            first_bytes,
            bytes,
            state,
            hooks: None,
        };
        let order: Vec<usize> = (0..buckets.params.len()).collect();
        buckets.lay_out(&order)?;
        buckets.hooks = buckets.register_hooks()?;
        Ok(buckets)
    }

    /// Allocates the buckets with the parameters in `order` (positions in `self.params`) and
    /// makes each gradient a view into its bucket, keeping the values the gradients hold.
    fn lay_out(&mut self, order: &[usize]) -> Result<()> {
        let Some((_, first)) = self.params.first() else {
            return Ok(());
        };
        let (kind, device) = (first.kind(), first.device());
        let sizes: Vec<usize> = order.iter().map(|&i| self.params[i].1.numel()).collect();
        let ranges = dist::buckets(
            &sizes,
            kind.elt_size_in_bytes(),
            self.first_bytes,
            self.bytes,
        );
        let mut flat = Vec::with_capacity(ranges.len());
        let mut names = Vec::with_capacity(ranges.len());
        let mut bucket_of = vec![0; self.params.len()];
        for (b, range) in ranges.into_iter().enumerate() {
            let total: usize = sizes[range.clone()].iter().sum();
            let buffer = Tensor::f_zeros([total as i64], (kind, device))?;
            let mut offset = 0i64;
            for &i in &order[range.clone()] {
                let (name, p) = &self.params[i];
                let view = buffer.f_as_strided(p.size(), dense_strides(p), Some(offset))?;
                let old = p.f_grad()?;
                if old.defined() {
                    tch::no_grad(|| view.shallow_clone().f_copy_(&old))?;
                }
                set_grad(p, &view).map_err(|e| match e {
                    Error::Torch(m) => Error::Torch(format!("the gradient of {name}: {m}")),
                    other => other,
                })?;
                bucket_of[i] = b;
                offset += p.numel() as i64;
            }
            names.push(
                order[range]
                    .iter()
                    .map(|&i| self.params[i].0.clone())
                    .collect(),
            );
            flat.push(buffer);
        }
        let mut state = self.state.lock();
        state.waiting = vec![0; flat.len()];
        state.bucket_of = bucket_of;
        drop(state);
        self.flat = flat;
        self.names = names;
        self.layout = order.to_vec();
        Ok(())
    }

    fn register_hooks(&self) -> Result<Option<Hooks>> {
        if self.params.is_empty() {
            return Ok(None);
        }
        let ptrs: Vec<*const C_tensor> = self.params.iter().map(|(_, p)| p.as_ptr()).collect();
        let user = (&*self.state as *const Mutex<HookState>)
            .cast_mut()
            .cast::<c_void>();
        let mut out = std::ptr::null_mut();
        bridge::call("gradient hooks", |e, l| {
            // SAFETY: ptrs holds live parameter handles for the call; `user` is the boxed
            // state, which outlives the hooks (they are removed first on drop); `out` is
            // written only on success.
            unsafe { mgb_grad_hooks_new(ptrs.as_ptr(), ptrs.len(), on_ready, user, &mut out, e, l) }
        })?;
        Ok(NonNull::new(out).map(Hooks))
    }

    /// The buckets, each holding its parameters' gradients.
    pub fn flat(&self) -> &[Tensor] {
        &self.flat
    }

    /// The parameters of each bucket, by name.
    pub fn names(&self) -> &[Vec<String>] {
        &self.names
    }

    /// Every bucket divided by `world` then summed over ranks, in place: the mean over ranks of
    /// every gradient, with f16 and f32 kept in range as DDP's pre-division does.
    pub fn all_reduce_mean(&self, comm: &mut dyn dist::Collective) -> Result<()> {
        let world = comm.world_size();
        if world == 1 || self.flat.is_empty() {
            return Ok(());
        }
        // A 0-dim tensor, not a scalar: tch's scalar overloads panic on a libtorch error.
        let world_t = crate::model::scalar(world as f64)?;
        tch::no_grad(|| -> Result<()> {
            for b in &self.flat {
                let _ = b.shallow_clone().f_div_(&world_t)?;
            }
            Ok(())
        })?;
        comm.all_reduce_sum(&self.flat)
    }

    /// Lends `comm` to the gradient hooks for the next backward: each bucket's mean over ranks
    /// starts as soon as its gradients are in. [`GradBuckets::finish`] must follow the
    /// backward, success or not.
    pub fn arm(&mut self, comm: &mut (dyn Collective + 'static)) -> Result<()> {
        let world = crate::model::scalar(comm.world_size() as f64)?;
        let mut state = self.state.lock();
        let counts = self.names.iter().map(Vec::len);
        state
            .waiting
            .iter_mut()
            .zip(counts)
            .for_each(|(w, n)| *w = n);
        state.next = 0;
        state.error = None;
        state.armed = Some(Armed {
            comm: comm as *mut (dyn Collective + 'static),
            world,
            flat: self.flat.iter().map(Tensor::shallow_clone).collect(),
        });
        Ok(())
    }

    /// After an armed backward: starts the buckets no hook started (parameters that got no
    /// gradient, in order), takes `comm` back and waits for every sum. Returns the first
    /// failure of a collective.
    pub fn finish(&mut self, comm: &mut (dyn Collective + 'static)) -> Result<()> {
        let mut state = self.state.lock();
        while state.next < state.waiting.len() {
            let b = state.next;
            state.next += 1;
            state.start(b);
        }
        state.armed = None;
        let error = state.error.take();
        drop(state);
        let waited = comm.wait_started();
        match error {
            Some(e) => Err(e),
            None => waited,
        }
    }

    /// The order gradients came in during the first backward (positions in the parameter list
    /// the buckets were first laid out from; those that got none follow in their old order),
    /// once; None before a backward and after the first call.
    pub fn take_observed_order(&mut self) -> Option<Vec<usize>> {
        let mut state = self.state.lock();
        let mut order = state.order.take()?;
        state.recording = false;
        drop(state);
        // Parameters that got no gradient go last, as they were: their buckets wait for the
        // end of backward whatever happens.
        let seen: std::collections::HashSet<usize> = order.iter().copied().collect();
        order.extend(self.layout.iter().filter(|i| !seen.contains(i)));
        Some(order)
    }

    /// Whether `order` (from [`GradBuckets::take_observed_order`]) is another order than the
    /// buckets hold the parameters in.
    pub fn differs(&self, order: &[usize]) -> bool {
        order != self.layout
    }

    /// Lays the buckets out again with the parameters in `order` (from
    /// [`GradBuckets::take_observed_order`], the same on every rank), keeping the gradients'
    /// values.
    pub fn rebuild(&mut self, order: &[usize]) -> Result<()> {
        let mut sorted = order.to_vec();
        sorted.sort_unstable();
        if sorted != (0..self.params.len()).collect::<Vec<_>>() {
            return Err(Error::InvalidArgument(format!(
                "a bucket order must list each of the {} parameters once",
                self.params.len()
            )));
        }
        self.lay_out(order)
    }
}

/// Trainable parameters with their names, in the reverse of the order the model created them:
/// the order backward produces their gradients. (The var store keeps creation order for
/// trainable tensors only; names come from its name map.)
fn backward_order(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let names: HashMap<usize, String> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (t.data_ptr() as usize, n))
        .collect();
    vs.trainable_variables()
        .into_iter()
        .rev()
        .filter(Tensor::requires_grad)
        .filter_map(|t| names.get(&(t.data_ptr() as usize)).map(|n| (n.clone(), t)))
        .collect()
}

/// `p`'s strides when they cover exactly its elements (contiguous, channels-last or any other
/// dense permutation), so the gradient shares its layout; else the contiguous ones.
fn dense_strides(p: &Tensor) -> Vec<i64> {
    let (size, stride) = (p.size(), p.stride());
    let extent: i64 = size
        .iter()
        .zip(&stride)
        .map(|(&n, &s)| (n - 1) * s)
        .sum::<i64>()
        + 1;
    let mut order: Vec<usize> = (0..size.len()).collect();
    order.sort_by_key(|&i| stride[i]);
    // Dense: sorted by stride, each stride is the product of the sizes below it.
    let mut expected = 1;
    let dense = extent == p.numel() as i64
        && order.iter().all(|&i| {
            let ok = size[i] == 1 || stride[i] == expected;
            expected *= size[i];
            ok
        });
    if dense {
        return stride;
    }
    let mut contiguous = vec![1i64; size.len()];
    for i in (0..size.len().saturating_sub(1)).rev() {
        contiguous[i] = contiguous[i + 1] * size[i + 1];
    }
    contiguous
}

fn set_grad(p: &Tensor, grad: &Tensor) -> Result<()> {
    bridge::call("set a gradient", |e, l| {
        // SAFETY: both handles are live tensors for the whole call; the bridge only reads them.
        unsafe { mgb_set_grad(p.as_ptr(), grad.as_ptr(), e, l) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn gradients_accumulate_into_their_bucket_in_the_parameters_layout() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        let a = root.var("a", &[2, 3], nn::Init::Const(1.0));
        // Channels-last: strides (C*D*H*W... ) of a permuted dense tensor.
        let w = root.var("w", &[4, 3, 2, 2, 2], nn::Init::Const(1.0));
        let w_cl = tch::no_grad(|| crate::model::channels_last_3d(&w).unwrap());
        tch::no_grad(|| w.shallow_clone().set_data(&w_cl));
        assert!(crate::model::is_channels_last_3d(&w));
        let b = root.var("b", &[5], nn::Init::Const(1.0));
        // 4-byte elements, buckets of 8 bytes: a alone, then w and b.
        let buckets = GradBuckets::new(&vs, 8, 16).unwrap();
        assert_eq!(
            buckets.names(),
            &[vec!["b".to_string()], vec!["w".into()], vec!["a".into()]]
        );
        assert_eq!(
            w.grad().stride(),
            w.stride(),
            "the gradient keeps the layout"
        );
        let loss = (&a * 2.0).sum(Kind::Float) + (&w * 3.0).sum(Kind::Float) + b.sum(Kind::Float);
        loss.backward();
        let total: f64 = buckets
            .flat()
            .iter()
            .map(|f| f.sum(Kind::Double).double_value(&[]))
            .sum();
        assert_eq!(
            total,
            6.0 * 2.0 + 96.0 * 3.0 + 5.0,
            "every gradient in a bucket"
        );
        assert_eq!(a.grad().sum(Kind::Double).double_value(&[]), 12.0);
        // A second backward accumulates, still in the bucket.
        loss.backward();
        let w_sum = buckets.flat()[1].sum(Kind::Double).double_value(&[]);
        assert_eq!(w_sum, 2.0 * 96.0 * 3.0);
    }

    #[test]
    fn strides_of_dense_layouts_are_kept_and_others_replaced() {
        let t = Tensor::zeros([2, 3, 4], (Kind::Float, tch::Device::Cpu));
        assert_eq!(dense_strides(&t), vec![12, 4, 1]);
        let p = t.permute([2, 0, 1]);
        assert_eq!(dense_strides(&p), p.stride());
        let sliced = t.narrow(2, 0, 2);
        assert_eq!(dense_strides(&sliced), vec![6, 2, 1]);
    }

    /// Two ranks as one test sees them: every sum doubles the tensor (both ranks hold the same
    /// gradients), and each start records how far backward had got.
    struct Recorder {
        /// The parameter backward reaches last; its gradient is still zero while backward has
        /// not got there.
        last: Tensor,
        /// Per start: (bucket size, whether `last`'s gradient was still zero).
        starts: Vec<(i64, bool)>,
        waits: usize,
    }

    impl Collective for Recorder {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn backend(&self) -> &'static str {
            "recorder"
        }
        fn all_reduce_sum(&mut self, tensors: &[Tensor]) -> Result<()> {
            for t in tensors {
                let _ = t.shallow_clone().f_mul_(&crate::model::scalar(2.0)?)?;
            }
            Ok(())
        }
        fn start_all_reduce_sum(&mut self, tensor: &Tensor) -> Result<()> {
            let g = self.last.grad();
            let untouched = g.abs().sum(Kind::Double).double_value(&[]) == 0.0;
            self.starts.push((tensor.numel() as i64, untouched));
            self.all_reduce_sum(std::slice::from_ref(tensor))
        }
        fn wait_started(&mut self) -> Result<()> {
            self.waits += 1;
            Ok(())
        }
        fn all_reduce_sum_group(&mut self, _: &[Tensor], _: &[usize]) -> Result<()> {
            unreachable!()
        }
        fn create_group(&mut self, _: &[usize]) -> Result<()> {
            unreachable!()
        }
        fn broadcast(&mut self, _: &[Tensor], _: usize) -> Result<()> {
            unreachable!()
        }
        fn barrier(&mut self) -> Result<()> {
            unreachable!()
        }
        fn all_gather_f64(&mut self, _: &[f64]) -> Result<Vec<Vec<f64>>> {
            unreachable!()
        }
    }

    /// x -> w1 -> w2 -> w3 -> a sum.
    fn chain_loss(w: &[Tensor; 3]) -> Tensor {
        let x = Tensor::ones([3, 4], (Kind::Float, tch::Device::Cpu));
        x.matmul(&w[0])
            .tanh()
            .matmul(&w[1])
            .tanh()
            .matmul(&w[2])
            .sum(Kind::Float)
    }

    /// The chain's parameters, created in forward order, and its loss.
    fn chain() -> (nn::VarStore, [Tensor; 3], Tensor) {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        let w = [
            root.var("w1", &[4, 4], nn::Init::Const(0.5)),
            root.var("w2", &[4, 4], nn::Init::Const(0.25)),
            root.var("w3", &[4, 4], nn::Init::Const(2.0)),
        ];
        let loss = chain_loss(&w);
        (vs, w, loss)
    }

    #[test]
    fn buckets_start_their_all_reduce_during_backward_in_order() {
        let (vs, [w1, _, _], loss) = chain();
        // 64-byte buckets: one parameter each, w3's first.
        let mut buckets = GradBuckets::new(&vs, 64, 64).unwrap();
        assert_eq!(buckets.flat().len(), 3);
        let mut comm = Recorder {
            last: w1.shallow_clone(),
            starts: Vec::new(),
            waits: 0,
        };
        buckets.arm(&mut comm).unwrap();
        loss.backward();
        let during = comm.starts.clone();
        buckets.finish(&mut comm).unwrap();
        // w3's and w2's buckets started while w1's gradient was still to come: the sums
        // overlapped backward. w1's bucket started with its gradient, in the same backward.
        assert_eq!(during, vec![(16, true), (16, true), (16, false)]);
        assert_eq!(comm.waits, 1);

        // The result is what the all-reduce after backward gives: the mean over two equal
        // ranks, i.e. the gradient itself.
        let (vs2, [v1, v2, v3], loss2) = chain();
        let plain = GradBuckets::new(&vs2, 64, 64).unwrap();
        loss2.backward();
        plain.all_reduce_mean(&mut comm).unwrap();
        let vars = vs.variables();
        for (name, v) in [("w1", v1), ("w2", v2), ("w3", v3)] {
            let diff = (vars[name].grad() - v.grad()).abs().max().double_value(&[]);
            assert_eq!(diff, 0.0, "{name}");
        }
    }

    #[test]
    fn a_bucket_whose_parameter_got_no_gradient_starts_after_backward() {
        let (vs, w, _) = chain();
        let unused = vs.root().var("unused", &[2], nn::Init::Const(1.0));
        let mut buckets = GradBuckets::new(&vs, 8, 8).unwrap();
        let mut comm = Recorder {
            last: w[0].shallow_clone(),
            starts: Vec::new(),
            waits: 0,
        };
        buckets.arm(&mut comm).unwrap();
        chain_loss(&w).backward();
        buckets.finish(&mut comm).unwrap();
        // The unused parameter, created last, is first in line and holds every bucket back
        // until backward ends.
        assert_eq!(comm.starts.len(), 4, "every bucket is reduced, used or not");
        assert!(comm.starts.iter().all(|s| !s.1), "{:?}", comm.starts);
        assert_eq!(unused.grad().sum(Kind::Double).double_value(&[]), 0.0);
        // The rebuild puts it last, so the next backward starts the others as their
        // gradients come.
        let order = buckets.take_observed_order().unwrap();
        assert!(buckets.differs(&order));
        buckets.rebuild(&order).unwrap();
        assert_eq!(buckets.names()[3], vec!["unused".to_string()]);
        comm.starts.clear();
        for f in buckets.flat() {
            let _ = tch::no_grad(|| f.shallow_clone().zero_());
        }
        buckets.arm(&mut comm).unwrap();
        chain_loss(&w).backward();
        assert_eq!(
            comm.starts.len(),
            3,
            "w3, w2 and w1's buckets during backward"
        );
        assert!(comm.starts[0].1, "w3's before w1's gradient");
        buckets.finish(&mut comm).unwrap();
        assert_eq!(comm.starts.len(), 4);
    }

    #[test]
    fn the_first_backward_order_rebuilds_the_buckets_keeping_the_gradients() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        // Created a then b, but b is applied last, so backward reaches b first: the
        // creation order reversed (b, a) happens to be right; c, created last but applied
        // first, is where it goes wrong.
        let c = root.var("c", &[3], nn::Init::Const(1.0));
        let a = root.var("a", &[3], nn::Init::Const(2.0));
        let b = root.var("b", &[3], nn::Init::Const(3.0));
        let mut buckets = GradBuckets::new(&vs, 12, 12).unwrap();
        assert_eq!(
            buckets.names(),
            &[vec!["b".to_string()], vec!["a".into()], vec!["c".into()]]
        );
        // c is applied last: its gradient comes first.
        let loss = || {
            let x = Tensor::ones([3], (Kind::Float, tch::Device::Cpu));
            ((&x * &a).tanh() * &b).tanh().dot(&c)
        };
        loss().backward();
        // A second backward (warm-up runs one per shape) does not add to the first's order.
        loss().backward();
        let before: Vec<f64> = [&a, &b, &c]
            .iter()
            .map(|p| p.grad().sum(Kind::Double).double_value(&[]))
            .collect();
        let order = buckets.take_observed_order().unwrap();
        assert!(buckets.differs(&order));
        buckets.rebuild(&order).unwrap();
        assert_eq!(
            buckets.names(),
            &[vec!["c".to_string()], vec!["b".into()], vec!["a".into()]]
        );
        let after: Vec<f64> = [&a, &b, &c]
            .iter()
            .map(|p| p.grad().sum(Kind::Double).double_value(&[]))
            .collect();
        assert_eq!(before, after, "the gradients keep their values");
        // And live in the new buckets: the next backward accumulates into them.
        loss().backward();
        let total: f64 = buckets
            .flat()
            .iter()
            .map(|f| f.sum(Kind::Double).double_value(&[]))
            .sum();
        // Two backwards' worth before, a third now.
        assert!(
            (total - 1.5 * before.iter().sum::<f64>()).abs() < 1e-5,
            "{total}"
        );
        assert!(buckets.take_observed_order().is_none(), "once only");
        assert!(buckets.rebuild(&[0, 0, 1]).is_err());
    }
}
