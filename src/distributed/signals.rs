//! Preemption notices. Slurm (`--signal=USR1@120`, or SIGTERM ahead of its kill), Kubernetes
//! (SIGTERM, then SIGKILL after the grace period) and torchrun's agent ask a job to stop some
//! time before they kill it. The handler only records which signal came (an atomic store is
//! all a handler may safely do); the trainer looks at it between steps, ranks agree on it, and
//! all of them write one checkpoint and stop (`Summary::preempted`).
//!
//! The library installs nothing by itself: a host program (Python, a C++ trainer) owns its
//! process's signals. `multigrid train` installs [`PREEMPTION`]; a host that wants the same
//! calls [`install`], or [`request`] from its own handler.

use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};

/// What `multigrid train` treats as a preemption notice.
pub const PREEMPTION: [i32; 2] = [libc::SIGTERM, libc::SIGUSR1];

/// `multigrid train`'s exit status after a preemption notice stopped it with a checkpoint:
/// neither success (0), nor an error (1; 2 for a usage error), nor the watchdog's 75. A job
/// script requeues on it (`[ $? -eq 3 ] && scontrol requeue $SLURM_JOB_ID`).
pub const EXIT_PREEMPTED: u8 = 3;

/// The last signal recorded, 0 when none.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(signal: libc::c_int) {
    PENDING.store(signal, Ordering::SeqCst);
}

/// Records `signals` from now on instead of their default action (which for SIGTERM and
/// SIGUSR1 ends the process at once). SA_RESTART, so a loader thread's read is not cut short.
pub fn install(signals: &[i32]) -> Result<()> {
    for &s in signals {
        // SAFETY: a zeroed sigaction is a valid start; `record` is async-signal-safe (one
        // atomic store) and lives for the whole process.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(s, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(Error::InvalidArgument(format!(
                "cannot handle {}: {}",
                name(s),
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// As if `signal` had arrived: for a host's own handler, or a test.
pub fn request(signal: i32) {
    PENDING.store(signal, Ordering::SeqCst);
}

/// The signal recorded since the last [`clear`], if any.
pub fn pending() -> Option<i32> {
    match PENDING.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

pub fn clear() {
    PENDING.store(0, Ordering::SeqCst);
}

/// `SIGTERM`, `SIGUSR1`, ..., or `signal N`.
pub fn name(signal: i32) -> String {
    match signal {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGUSR1 => "SIGUSR1".into(),
        libc::SIGUSR2 => "SIGUSR2".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGHUP => "SIGHUP".into(),
        s => format!("signal {s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivered_signal_is_recorded_not_fatal() {
        install(&[libc::SIGUSR2]).unwrap();
        clear();
        assert_eq!(pending(), None);
        // SAFETY: raising a signal whose handler was just installed.
        assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
        assert_eq!(pending(), Some(libc::SIGUSR2));
        assert_eq!(name(pending().unwrap()), "SIGUSR2");
        clear();
        assert_eq!(pending(), None);
    }
}
