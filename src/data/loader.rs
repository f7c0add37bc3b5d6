//! Background loading: worker threads decode (or read) and collate the plan's next batches
//! ahead of the trainer. The queue is bounded in clips, not batches, because a multigrid batch
//! holds 1 to 16 times as many clips as a baseline one. Batches come out in step order.

use std::collections::BTreeMap;
use std::ops::Range;
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
                    .spawn(move || worker(&shared, &plan, &dataset, end, options))
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
        let result = load_batch(dataset, plan, &step, o.alpha);
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
