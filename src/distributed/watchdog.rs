//! Ends the process when a collective outlives the timeout: a peer that died or hangs would
//! otherwise leave this rank blocked forever inside the engine. PyTorch's NCCL watchdog does
//! the same (TORCH_NCCL_ASYNC_ERROR_HANDLING); a launcher then sees a non-zero exit and stops
//! the job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Exit status of a rank that gave up waiting for its peers.
pub const TIMEOUT_EXIT_CODE: i32 = 75;

struct Shared {
    current: Mutex<Option<(&'static str, Instant)>>,
    stop: std::sync::atomic::AtomicBool,
}

pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Marks one collective in flight; dropping it marks the end.
pub struct Watch<'a>(&'a Shared);

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        *self.0.current.lock() = None;
    }
}

impl Watchdog {
    pub fn new(rank: usize, world: usize, timeout: Duration) -> Watchdog {
        let shared = Arc::new(Shared {
            current: Mutex::new(None),
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let s = shared.clone();
        let tick = (timeout / 10).clamp(Duration::from_millis(20), Duration::from_secs(1));
        let thread = std::thread::Builder::new()
            .name(format!("mg-watchdog-{rank}"))
            .spawn(move || {
                while !s.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    let late = (*s.current.lock()).filter(|(_, t)| t.elapsed() > timeout);
                    if let Some((what, since)) = late {
                        eprintln!(
                            "multigrid: rank {rank} of {world}: {what} did not complete within \
                             {:.0} s (run.dist_timeout_s): another rank died or hangs; exiting \
                             with status {TIMEOUT_EXIT_CODE}",
                            since.elapsed().as_secs_f64()
                        );
                        // Not `exit`: atexit handlers (MPI_Finalize) would wait for the peers.
                        // SAFETY: _exit ends the process without running any Rust code after.
                        unsafe { libc::_exit(TIMEOUT_EXIT_CODE) };
                    }
                }
            })
            .ok();
        Watchdog { shared, thread }
    }

    pub fn watch(&self, what: &'static str) -> Watch<'_> {
        *self.shared.current.lock() = Some((what, Instant::now()));
        Watch(&self.shared)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
