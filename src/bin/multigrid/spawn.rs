//! `multigrid train --nproc-per-node N`: starts the ranks of one machine itself, so the
//! common case needs no launcher knowledge. CUDA runs get torchrun's environment (one process
//! per GPU, rendezvous at a TCPStore on 127.0.0.1); CPU runs go through `mpirun`, since CPU
//! ranks talk through MPI.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use multigrid::distributed::signals::{self, EXIT_PREEMPTED};

/// How the ranks ended, when none failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Done,
    /// Every rank stopped for a preemption notice after writing a checkpoint.
    Preempted,
}

/// Runs this executable `nproc` times with `args` (the original arguments without
/// `--nproc-per-node`), and returns when all have ended; the first failure ends the others.
///
/// Signals sent to this process reach the ranks: SIGTERM and SIGUSR1 (a scheduler's notice)
/// as SIGUSR1 through mpirun, which forwards that one to every rank where it would kill the
/// job at SIGTERM, and as themselves to CUDA ranks; both make the ranks checkpoint and stop
/// (`multigrid::distributed::signals`). SIGINT and a second notice are forwarded as they are, which
/// ends the ranks at once.
pub fn spawn_ranks(
    nproc: usize,
    cuda: bool,
    args: &[String],
    timeout: Duration,
) -> Result<Ended, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    signals::install(&[libc::SIGTERM, libc::SIGUSR1, libc::SIGINT]).map_err(|e| e.to_string())?;
    if !cuda {
        let child = mpirun(nproc).arg(&exe).args(args).spawn().map_err(|e| {
            format!(
                "cannot start mpirun ({e}): CPU ranks need Open MPI (Debian: openmpi-bin) on PATH"
            )
        })?;
        return supervise(vec![("mpirun".into(), child)], true);
    }
    // The rendezvous store lives here, as torchrun's agent keeps it: bound to a port of the
    // kernel's choosing, so no other process can take the port between choosing and binding,
    // and every rank connects to it as a client (TORCHELASTIC_USE_AGENT_STORE).
    let (store, port) = agent_store(nproc, timeout)?;
    let mut children: Vec<(String, Child)> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        let mut cmd = Command::new(&exe);
        cmd.args(args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
        if store.is_some() {
            cmd.env("TORCHELASTIC_USE_AGENT_STORE", "True");
        }
        // PyTorch's default, set where unset so an older libtorch behaves alike: a NCCL error
        // or timeout ends the rank (and so, through this launcher, the job).
        if std::env::var_os("TORCH_NCCL_ASYNC_ERROR_HANDLING").is_none()
            && std::env::var_os("NCCL_ASYNC_ERROR_HANDLING").is_none()
        {
            cmd.env("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3");
        }
        match cmd.spawn() {
            Ok(child) => children.push((format!("rank {rank}"), child)),
            Err(e) => {
                for (_, c) in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(format!("cannot start rank {rank}: {e}"));
            }
        }
    }
    let ended = supervise(children, false);
    drop(store);
    ended
}

/// Waits for `children`, forwarding signals (see [`spawn_ranks`]); when one fails, the others
/// are stopped, as torchrun does.
fn supervise(mut children: Vec<(String, Child)>, through_mpirun: bool) -> Result<Ended, String> {
    let mut failure: Option<String> = None;
    let mut preempted = 0;
    let mut notices = 0;
    while !children.is_empty() {
        if let Some(sig) = signals::pending() {
            signals::clear();
            let notice = sig != libc::SIGINT;
            notices += usize::from(notice);
            let forward = match (notice, notices, through_mpirun) {
                (true, 1, true) => libc::SIGUSR1,
                _ => sig,
            };
            for (_, c) in &children {
                // SAFETY: kill has no memory preconditions; the child is not yet reaped, so
                // its pid is still its own.
                unsafe { libc::kill(c.id() as libc::pid_t, forward) };
            }
        }
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (who, _) = children.remove(i);
                    if status.code() == Some(i32::from(EXIT_PREEMPTED)) {
                        preempted += 1;
                    } else if let Err(e) = check(status, &who) {
                        failure.get_or_insert(e);
                    }
                }
                Ok(None) => i += 1,
                Err(e) => {
                    failure.get_or_insert(format!("{}: {e}", children[i].0));
                    i += 1;
                }
            }
        }
        if failure.is_some() {
            for (_, c) in &mut children {
                let _ = c.kill();
                let _ = c.wait();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match failure {
        Some(e) => Err(e),
        None if preempted > 0 => Ok(Ended::Preempted),
        None => Ok(Ended::Done),
    }
}

#[cfg(mg_c10d)]
fn agent_store(
    nproc: usize,
    timeout: Duration,
) -> Result<(Option<multigrid::distributed::c10d::Store>, u16), String> {
    let store = multigrid::distributed::c10d::Store::tcp("127.0.0.1", 0, true, nproc, timeout)
        .map_err(|e| format!("cannot start the rendezvous store: {e}"))?;
    let port = store.port();
    Ok((Some(store), port))
}

/// Without c10d in this build no rank can use a store either: a free port for the message
/// the ranks will give.
#[cfg(not(mg_c10d))]
fn agent_store(_: usize, _: Duration) -> Result<(Option<()>, u16), String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = l
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    Ok((None, port))
}

/// `mpirun -np N` for ranks on this machine, to which the program and its arguments are added.
pub fn mpirun(nproc: usize) -> Command {
    let mut cmd = Command::new("mpirun");
    if is_root() {
        // Open MPI refuses root without both of these (or --allow-run-as-root).
        cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    }
    // --oversubscribe: more ranks than cores is allowed (they split the cores);
    // --bind-to none: each rank sets its own thread count.
    cmd.args([
        "-np",
        &nproc.to_string(),
        "--oversubscribe",
        "--bind-to",
        "none",
    ]);
    cmd
}

fn check(status: ExitStatus, who: &str) -> Result<(), String> {
    match (status.success(), status.signal()) {
        (true, _) => Ok(()),
        (false, Some(sig)) => Err(format!("{who} ended by {}", signals::name(sig))),
        (false, None) => Err(format!("{who} failed ({status})")),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The arguments of this process without `--nproc-per-node N` / `--nproc-per-node=N`.
pub fn args_without_nproc() -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in std::env::args().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        if a == "--nproc-per-node" {
            skip = true;
            continue;
        }
        if a.starts_with("--nproc-per-node=") {
            continue;
        }
        out.push(a);
    }
    out
}
