//! Background loading: worker threads decode (or read) and collate the plan's next batches
//! ahead of the trainer. Batches come out in step order.
//!
//! Sized per shape, because a multigrid batch holds 1 to 16 times as many clips as a baseline
//! one while its pixels stay about the same:
//! - a batch is split into one clip range per worker, and the workers take the ranges of the
//!   oldest batch first, so a 128-clip batch is collated by every worker at once rather than by
//!   one worker while the others run ahead;
//! - the queue is bounded in clips of the base shape (`run.queue_clips` at `data.num_frames` x
//!   `data.train_crop_size`): a clip of a smaller shape counts its share of a base clip's
//!   values, so the memory held ahead is about the same at every shape and 8-16x more clips
//!   are prepared at the small ones.

use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::assemble::ClipsLoaded;
use super::dataset::{batch_spec, finish_batch, load_clips, Batch, BatchSpec, Dataset};
use crate::error::{Error, Result};
use crate::plan::Plan;

#[derive(Debug, Clone, Copy)]
pub struct LoaderOptions {
    /// Decoding threads.
    pub workers: usize,
    /// Clips of the base shape that may be prepared ahead of the trainer (in progress or
    /// waiting); a smaller clip counts its share of a base clip's values.
    pub queue_clips: usize,
    /// SlowFast alpha; 0 for a single pathway.
    pub alpha: u32,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            workers: 2,
            queue_clips: 512,
            alpha: 4,
        }
    }
}

/// Throughput and waiting, for the trainer's metrics.
#[derive(Debug, Clone, Default)]
pub struct LoaderStats {
    pub batches: u64,
    pub clips: u64,
    /// Clips that failed to decode and were replaced.
    pub failures: u64,
    /// The latest failure messages (at most 16), each naming the file and the reason.
    pub recent_failures: Vec<String>,
    /// Seconds the workers spent producing batches, summed over workers.
    pub busy_seconds: f64,
    /// Seconds the consumer waited for a batch.
    pub wait_seconds: f64,
}

/// A batch whose clip ranges are being loaded.
struct Partial {
    spec: Arc<BatchSpec>,
    /// Written through [`FastPtr`]s, one disjoint clip range per unit; never resized while a
    /// unit is out.
    fast: Vec<f32>,
    /// Each finished range's results, by first clip.
    done: BTreeMap<usize, ClipsLoaded>,
    units: usize,
    units_out: usize,
    /// Base-shape clips this batch holds of the queue.
    cost: f64,
    error: Option<Error>,
}

/// A unit of work: clips `range` of step `step`, written at `fast`.
struct Unit {
    step: u64,
    spec: Arc<BatchSpec>,
    range: Range<usize>,
    fast: FastPtr,
}

/// The start of a unit's clip range in its batch's `fast` buffer.
struct FastPtr(*mut f32, usize);
// SAFETY: a FastPtr is the only handle on its range of a live Vec (see `claim`); the Vec is
// neither moved nor freed until every unit of its batch has reported back under the lock.
unsafe impl Send for FastPtr {}

struct State {
    /// The next step to admit to the queue, and the first clip of it not yet handed out.
    next_step: u64,
    next_clip: usize,
    next_deliver: u64,
    /// Base-shape clips admitted and not yet delivered.
    buffered: f64,
    partial: BTreeMap<u64, Partial>,
    /// Finished batches and the base-shape clips each holds of the queue until delivered.
    ready: BTreeMap<u64, (Result<Batch>, f64)>,
    stop: bool,
    /// A worker died of a panic outside a batch: the steps it claimed never arrive.
    worker_panic: Option<String>,
    stats: LoaderStats,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

pub struct Loader {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    end: u64,
}

/// What workers need besides the shared state.
struct Context {
    plan: Arc<Plan>,
    dataset: Arc<Dataset>,
    end: u64,
    options: LoaderOptions,
    /// Values of one clip at the base shape.
    base_values: f64,
}

impl Loader {
    /// Starts loading steps `steps` of `plan` from `dataset`.
    pub fn new(
        plan: Arc<Plan>,
        dataset: Arc<Dataset>,
        steps: Range<u64>,
        options: LoaderOptions,
    ) -> Result<Loader> {
        if options.workers == 0 {
            return Err(Error::InvalidArgument(
                "the loader needs at least one worker".into(),
            ));
        }
        if steps.end > plan.total_steps() {
            return Err(Error::OutOfRange(format!(
                "steps {}..{} go past the plan's {} steps",
                steps.start,
                steps.end,
                plan.total_steps()
            )));
        }
        let data = &plan.schedule().config().data;
        let base_values =
            crate::collate::batch_len(1, data.num_frames, data.train_crop_size) as f64;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_step: steps.start,
                next_clip: 0,
                next_deliver: steps.start,
                buffered: 0.0,
                partial: BTreeMap::new(),
                ready: BTreeMap::new(),
                stop: false,
                worker_panic: None,
                stats: LoaderStats::default(),
            }),
            changed: Condvar::new(),
        });
        let context = Arc::new(Context {
            plan,
            dataset,
            end: steps.end,
            options,
            base_values: base_values.max(1.0),
        });
        let workers = (0..options.workers)
            .map(|w| {
                let (shared, context) = (shared.clone(), context.clone());
                std::thread::Builder::new()
                    .name(format!("mg-loader-{w}"))
                    .spawn(move || {
                        let run = || worker(&shared, &context);
                        if let Err(payload) = catch_unwind(AssertUnwindSafe(run)) {
                            let mut st = shared.state.lock();
                            st.worker_panic = Some(panic_text(&*payload));
                            drop(st);
                            shared.changed.notify_all();
                        }
                    })
                    .map_err(|e| Error::InvalidArgument(format!("cannot start loader thread: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Loader {
            shared,
            workers,
            end: steps.end,
        })
    }

    /// The next batch in step order; `None` after the last step.
    pub fn next_batch(&mut self) -> Option<Result<Batch>> {
        let start = Instant::now();
        let mut st = self.shared.state.lock();
        if st.next_deliver >= self.end {
            return None;
        }
        let k = st.next_deliver;
        while !st.ready.contains_key(&k) {
            if let Some(what) = &st.worker_panic {
                return Some(Err(Error::Internal(format!(
                    "a loader thread panicked before step {k}: {what}"
                ))));
            }
            self.shared
                .changed
                .wait_for(&mut st, Duration::from_millis(100));
        }
        let (batch, cost) = st.ready.remove(&k)?;
        st.next_deliver += 1;
        st.buffered = (st.buffered - cost).max(0.0);
        st.stats.wait_seconds += start.elapsed().as_secs_f64();
        drop(st);
        self.shared.changed.notify_all();
        Some(batch)
    }

    pub fn stats(&self) -> LoaderStats {
        self.shared.state.lock().stats.clone()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.changed.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The next unit of work, waiting for room in the queue; None when there is none left.
fn claim(shared: &Shared, c: &Context) -> Option<Unit> {
    let mut st = shared.state.lock();
    loop {
        if st.stop {
            return None;
        }
        // Hand out the rest of the step being split, if any.
        if let Some(p) = st.partial.get(&st.next_step) {
            let n = p.spec.indices.len();
            if st.next_clip < n {
                let k = st.next_step;
                let per_unit = n.div_ceil(p.units);
                let range = st.next_clip..(st.next_clip + per_unit).min(n);
                let p = st.partial.get_mut(&k)?;
                p.units_out += 1;
                let one = p.spec.clip_len;
                // SAFETY: `range` is within the batch (range.end <= n and fast holds n clips),
                // and ranges handed out for one batch never overlap (next_clip only grows).
                let at = unsafe { p.fast.as_mut_ptr().add(range.start * one) };
                let unit = Unit {
                    step: k,
                    spec: p.spec.clone(),
                    fast: FastPtr(at, range.len() * one),
                    range,
                };
                st.next_clip = unit.range.end;
                if st.next_clip >= n {
                    st.next_step += 1;
                    st.next_clip = 0;
                }
                return Some(unit);
            }
        }
        if st.next_step >= c.end {
            return None;
        }
        // Admit the next step once there is room for its clips; the step the consumer waits
        // for is always let through, so the queue can never stall.
        let k = st.next_step;
        let step = match c.plan.step(k) {
            Ok(s) => s,
            Err(e) => {
                st.next_step += 1;
                st.ready.insert(k, (Err(e), 0.0));
                shared.changed.notify_all();
                continue;
            }
        };
        let clips = step.batch_size as usize;
        let values = crate::collate::batch_len(clips, step.num_frames, step.crop_size) as f64;
        let cost = values / c.base_values;
        let room = st.buffered + cost <= c.options.queue_clips as f64;
        if k != st.next_deliver && !room {
            shared.changed.wait(&mut st);
            continue;
        }
        let spec = match batch_spec(&c.dataset, &c.plan, &step, c.options.alpha) {
            Ok(spec) => spec,
            Err(e) => {
                st.next_step += 1;
                st.ready.insert(k, (Err(e), 0.0));
                shared.changed.notify_all();
                continue;
            }
        };
        let n = spec.indices.len();
        let fast = vec![0f32; n * spec.clip_len];
        st.buffered += cost;
        st.next_clip = 0;
        st.partial.insert(
            k,
            Partial {
                units: c.options.workers.min(n).max(1),
                spec: Arc::new(spec),
                fast,
                done: BTreeMap::new(),
                units_out: 0,
                cost,
                error: None,
            },
        );
        if n == 0 {
            // Nothing to hand out: the batch is finished as it is.
            let p = st.partial.remove(&k)?;
            st.next_step += 1;
            drop(st);
            complete(shared, k, p);
            st = shared.state.lock();
        }
    }
}

fn worker(shared: &Shared, c: &Context) {
    while let Some(unit) = claim(shared, c) {
        let start = Instant::now();
        let Unit {
            step,
            spec,
            range,
            fast,
        } = unit;
        // A panic while loading becomes this step's error, so the consumer never waits for a
        // batch that cannot come.
        let result = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(test)]
            tests::maybe_panic(c.plan.seed(), step, range.start);
            // SAFETY: see FastPtr: this unit's range, exclusively, of a Vec that outlives it.
            let out = unsafe { std::slice::from_raw_parts_mut(fast.0, fast.1) };
            load_clips(&c.dataset, &c.plan, &spec, range.clone(), out)
        }))
        .unwrap_or_else(|payload| {
            Err(Error::Internal(format!(
                "the loader panicked on step {step}: {}",
                panic_text(&*payload)
            )))
        });
        // The batch's spec goes back to it whole when this was its last unit.
        drop(spec);
        let busy = start.elapsed().as_secs_f64();
        let mut st = shared.state.lock();
        st.stats.busy_seconds += busy;
        let Some(p) = st.partial.get_mut(&step) else {
            continue;
        };
        p.units_out -= 1;
        let last = p.units_out == 0;
        match result {
            Ok(loaded) => {
                p.done.insert(range.start, loaded);
            }
            Err(e) => {
                p.error.get_or_insert(e);
            }
        }
        // Complete once every range is handed out and back.
        if last && st.next_step > step {
            if let Some(p) = st.partial.remove(&step) {
                drop(st);
                complete(shared, step, p);
            }
        }
    }
}

/// Packs a batch whose units have all reported back and makes it ready.
fn complete(shared: &Shared, step: u64, p: Partial) {
    let Partial {
        spec,
        fast,
        done,
        cost,
        error,
        ..
    } = p;
    let result = match error {
        Some(e) => Err(e),
        None => {
            let mut all = ClipsLoaded::default();
            for (_, d) in done {
                all.indices.extend(d.indices);
                all.labels.extend(d.labels);
                all.targets.extend(d.targets);
                all.failures.extend(d.failures);
            }
            let spec = Arc::try_unwrap(spec).unwrap_or_else(|a| (*a).clone());
            finish_batch(spec, fast, all)
        }
    };
    let mut st = shared.state.lock();
    if let Ok(b) = &result {
        st.stats.batches += 1;
        st.stats.clips += b.len() as u64;
        st.stats.failures += b.failures.len() as u64;
        for f in &b.failures {
            if st.stats.recent_failures.len() == 16 {
                st.stats.recent_failures.remove(0);
            }
            st.stats.recent_failures.push(f.clone());
        }
    }
    // A failed batch gives its room back now; a batch gives it back when delivered.
    let held = if result.is_ok() {
        cost
    } else {
        st.buffered = (st.buffered - cost).max(0.0);
        0.0
    };
    st.ready.insert(step, (result, held));
    drop(st);
    shared.changed.notify_all();
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc;

    use super::*;
    use crate::data::dataset::load_batch;
    use crate::data::store::StoreWriter;
    use crate::schedule::{Config, Schedule};

    /// The step at which a test makes loading panic (u64::MAX: never).
    static PANIC_AT: AtomicU64 = AtomicU64::new(u64::MAX);

    /// The plan seed of the test that injects panics, so other tests' loaders never panic.
    const PANIC_SEED: u64 = 0x05EE_DBAD;

    pub(super) fn maybe_panic(seed: u64, step: u64, first_clip: usize) {
        if seed == PANIC_SEED && PANIC_AT.load(Ordering::SeqCst) == step && first_clip == 0 {
            panic!("injected loader panic at step {step}");
        }
    }

    /// A multigrid plan over a store of distinct clips: its steps change shape (long and
    /// short cycles), so batches of 1 to 16x the base batch's clips are split over workers.
    fn multigrid_plan(dir: &std::path::Path) -> (Arc<Plan>, Arc<Dataset>) {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("train.mgstore");
        let mut w = StoreWriter::create(&path).unwrap();
        for label in 0..24u32 {
            let frames: Vec<u8> = (0..8 * 24 * 24 * 3)
                .map(|k| (k as u32 * 7 + label * 31) as u8)
                .collect();
            w.add(&frames, 8, 24, 24, label % 5).unwrap();
        }
        w.finish().unwrap();
        let mut config = Config::default();
        config.train.batch_size = 2;
        config.data.num_frames = 8;
        config.data.train_crop_size = 16;
        config.data.train_jitter_scales = [16, 24];
        config.solver.max_epoch = 8;
        config.solver.steps = vec![0, 6];
        config.solver.lrs = vec![1.0, 0.1];
        config.multigrid.long_cycle = true;
        config.multigrid.short_cycle = true;
        let schedule = Schedule::new(config).unwrap();
        let plan = Arc::new(Plan::new(&schedule, 24, 1, 0, 3).unwrap());
        (plan, Arc::new(Dataset::store(&path).unwrap()))
    }

    #[test]
    fn batches_split_over_workers_equal_one_thread_at_every_shape() {
        let dir = std::env::temp_dir().join(format!("mg-loader-split-{}", std::process::id()));
        let (plan, dataset) = multigrid_plan(&dir);
        let steps = plan.total_steps();
        let mut shapes = std::collections::BTreeSet::new();
        // A queue of one base clip admits one batch at a time: the split is what runs ahead.
        for (workers, queue_clips) in [(3, 1), (4, 512)] {
            let options = LoaderOptions {
                workers,
                queue_clips,
                alpha: 4,
            };
            let mut loader = Loader::new(plan.clone(), dataset.clone(), 0..steps, options).unwrap();
            for k in 0..steps {
                let got = loader.next_batch().unwrap().unwrap();
                let want = load_batch(&dataset, &plan, &plan.step(k).unwrap(), 4).unwrap();
                assert_eq!(got.step, k);
                assert_eq!(got.indices, want.indices, "step {k}");
                assert_eq!(got.labels, want.labels, "step {k}");
                assert_eq!(got.fast, want.fast, "step {k}");
                assert_eq!(got.slow, want.slow, "step {k}");
                shapes.insert((got.len(), got.num_frames, got.crop_size));
            }
            assert!(loader.next_batch().is_none());
            assert_eq!(loader.stats().batches, steps);
        }
        assert!(
            shapes.iter().map(|s| s.0).max() >= Some(8),
            "the plan's shapes {shapes:?} lack the large batches this test is about"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_panicking_worker_is_an_error_not_a_hang() {
        let dir = std::env::temp_dir().join(format!("mg-loader-panic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("train.mgstore");
        let mut w = StoreWriter::create(&path).unwrap();
        for label in 0..8u32 {
            w.add(&vec![label as u8; 8 * 32 * 32 * 3], 8, 32, 32, label)
                .unwrap();
        }
        w.finish().unwrap();
        let mut config = Config::default();
        config.train.batch_size = 2;
        config.data.num_frames = 8;
        config.data.train_crop_size = 32;
        config.data.train_jitter_scales = [32, 40];
        config.solver.max_epoch = 1;
        config.solver.steps = vec![0];
        config.solver.lrs = vec![1.0];
        let schedule = Schedule::new(config).unwrap();
        let plan = Arc::new(Plan::new(&schedule, 8, 1, 0, PANIC_SEED).unwrap());
        let dataset = Arc::new(Dataset::store(&path).unwrap());
        PANIC_AT.store(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let options = LoaderOptions {
                workers: 1,
                queue_clips: 4,
                alpha: 4,
            };
            let mut loader = Loader::new(plan, dataset, 0..4, options).unwrap();
            let results: Vec<bool> = (0..4)
                .map(|_| loader.next_batch().is_some_and(|b| b.is_ok()))
                .collect();
            let _ = tx.send(results);
        });
        let results = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the loader hung after a worker panic");
        PANIC_AT.store(u64::MAX, Ordering::SeqCst);
        assert_eq!(results, [true, false, true, true]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
