//! `multigrid train --nproc-per-node N`: starts the ranks of one machine itself, so the
//! common case needs no launcher knowledge. CUDA runs get torchrun's environment (one process
//! per GPU, rendezvous at a TCPStore on 127.0.0.1); CPU runs go through `mpirun`, since CPU
//! ranks talk through MPI.

use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

/// Runs this executable `nproc` times with `args` (the original arguments without
/// `--nproc-per-node`), and returns when all have ended; the first failure ends the others.
pub fn spawn_ranks(nproc: usize, cuda: bool, args: &[String]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    if !cuda {
        let status = mpirun(nproc).arg(&exe).args(args).status().map_err(|e| {
            format!(
                "cannot start mpirun ({e}): CPU ranks need Open MPI (Debian: openmpi-bin) on PATH"
            )
        })?;
        return check(status, "mpirun");
    }
    let port = free_port()?;
    let mut children: Vec<(usize, Child)> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        let child = Command::new(&exe)
            .args(args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn()
            .map_err(|e| format!("cannot start rank {rank}: {e}"))?;
        children.push((rank, child));
    }
    // Wait for all; when one fails, the others are stopped, as torchrun does.
    let mut failure: Option<String> = None;
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (rank, _) = children.remove(i);
                    if let Err(e) = check(status, &format!("rank {rank}")) {
                        failure.get_or_insert(e);
                    }
                }
                Ok(None) => i += 1,
                Err(e) => {
                    failure.get_or_insert(format!("rank {}: {e}", children[i].0));
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
    failure.map_or(Ok(()), Err)
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
    if status.success() {
        Ok(())
    } else {
        Err(format!("{who} failed ({status})"))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A port the kernel just handed out on loopback: the TCPStore's server binds it next.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
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
