//! Background loading: worker threads decode (or read) and collate the plan's next batches
//! ahead of the trainer. The queue is bounded in clips, not batches, because a multigrid batch
//! holds 1 to 16 times as many clips as a baseline one. Batches come out in step order.

use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::dataset::{load_batch, Batch, Dataset};
use crate::error::{Error, Result};
use crate::plan::Plan;

#[derive(Debug, Clone, Copy)]
pub struct LoaderOptions {
    /// Decoding threads.
    pub workers: usize,
    /// Clips that may be prepared ahead of the trainer (in progress or waiting).
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

struct State {
    next_claim: u64,
    next_deliver: u64,
    buffered_clips: usize,
    ready: BTreeMap<u64, Result<Batch>>,
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
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_claim: steps.start,
                next_deliver: steps.start,
                buffered_clips: 0,
                ready: BTreeMap::new(),
                stop: false,
                worker_panic: None,
                stats: LoaderStats::default(),
            }),
            changed: Condvar::new(),
        });
        let workers = (0..options.workers)
            .map(|w| {
                let (shared, plan, dataset) = (shared.clone(), plan.clone(), dataset.clone());
                let end = steps.end;
                std::thread::Builder::new()
                    .name(format!("mg-loader-{w}"))
                    .spawn(move || {
                        let run = || worker(&shared, &plan, &dataset, end, options);
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
        let batch = st.ready.remove(&k)?;
        st.next_deliver += 1;
        // A failed batch gave its room back when it failed.
        if let Ok(b) = &batch {
            st.buffered_clips -= b.len();
        }
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

fn worker(shared: &Shared, plan: &Plan, dataset: &Dataset, end: u64, o: LoaderOptions) {
    loop {
        let (k, step) = {
            let mut st = shared.state.lock();
            // Claim the next unclaimed step once there is room for its clips; the step the
            // consumer waits for is always let through, so the queue can never stall. The step
            // is re-read after every wait, since another worker may have claimed it meanwhile.
            loop {
                if st.stop || st.next_claim >= end {
                    return;
                }
                let k = st.next_claim;
                let step = match plan.step(k) {
                    Ok(s) => s,
                    Err(e) => {
                        st.next_claim += 1;
                        st.ready.insert(k, Err(e));
                        shared.changed.notify_all();
                        continue;
                    }
                };
                let clips = step.batch_size as usize;
                if k == st.next_deliver || st.buffered_clips + clips <= o.queue_clips {
                    st.next_claim += 1;
                    st.buffered_clips += clips;
                    break (k, step);
                }
                shared.changed.wait(&mut st);
            }
        };
        let start = Instant::now();
        // A panic while loading becomes this step's error, so the consumer never waits for a
        // batch that cannot come.
        let result = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(test)]
            tests::maybe_panic(k);
            load_batch(dataset, plan, &step, o.alpha)
        }))
        .unwrap_or_else(|payload| {
            Err(Error::Internal(format!(
                "the loader panicked on step {k}: {}",
                panic_text(&*payload)
            )))
        });
        let busy = start.elapsed().as_secs_f64();
        let mut st = shared.state.lock();
        st.stats.busy_seconds += busy;
        match &result {
            Ok(b) => {
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
            Err(_) => st.buffered_clips -= step.batch_size as usize,
        }
        st.ready.insert(k, result);
        drop(st);
        shared.changed.notify_all();
    }
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
    use crate::data::store::StoreWriter;
    use crate::schedule::{Config, Schedule};

    /// The step at which a test makes loading panic (u64::MAX: never).
    static PANIC_AT: AtomicU64 = AtomicU64::new(u64::MAX);

    pub(super) fn maybe_panic(step: u64) {
        if PANIC_AT.load(Ordering::SeqCst) == step {
            panic!("injected loader panic at step {step}");
        }
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
        let plan = Arc::new(Plan::new(&schedule, 8, 1, 0, 0).unwrap());
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
