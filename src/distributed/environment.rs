//! Where this process sits in the job, read from the environment the launcher set: torchrun
//! (RANK, WORLD_SIZE, LOCAL_RANK, ...), Open MPI's mpirun (OMPI_COMM_WORLD_*), MPICH/PMI
//! (PMI_RANK, PMI_SIZE) and Slurm's srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID).

use crate::error::{Error, Result};

/// The program that started this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// No launcher: one process, or ranks given explicitly.
    None,
    Torchrun,
    Mpirun,
    Slurm,
}

impl Launcher {
    pub fn name(self) -> &'static str {
        match self {
            Launcher::None => "none",
            Launcher::Torchrun => "torchrun",
            Launcher::Mpirun => "mpirun",
            Launcher::Slurm => "srun",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub local_world_size: usize,
    /// torchrun's MASTER_ADDR / MASTER_PORT: the TCPStore every rank meets at.
    pub master_addr: Option<String>,
    pub master_port: Option<u16>,
    /// TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent already serves the store, so every
    /// rank, rank 0 included, connects as a client.
    pub agent_store: bool,
    /// The process was started by an MPI launcher, so MPI can be initialised.
    pub under_mpi: bool,
}

impl Launch {
    pub fn single() -> Launch {
        Launch {
            launcher: Launcher::None,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_world_size: 1,
            master_addr: None,
            master_port: None,
            agent_store: false,
            under_mpi: false,
        }
    }

    /// The launcher's settings from this process's environment; None when no launcher set any.
    pub fn from_env() -> Result<Option<Launch>> {
        Launch::from_vars(|k| std::env::var(k).ok())
    }

    /// `from_env` over any variable lookup, so tests need not touch the process environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let num = |k: &str| -> Result<Option<usize>> {
            match var(k) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "environment variable {k}={v:?} is not a number"
                    ))
                }),
            }
        };
        // Open MPI's mpirun, MPICH's Hydra (PMI), and srun with --mpi=pmix (PMIx).
        let under_mpi = var("OMPI_COMM_WORLD_SIZE").is_some()
            || var("PMI_SIZE").is_some()
            || var("PMIX_RANK").is_some();
        let mut l = Launch::single();
        l.under_mpi = under_mpi;
        if let (Some(rank), Some(world)) = (num("RANK")?, num("WORLD_SIZE")?) {
            // torchrun's names (also what PyTorch's env:// reads, so a hand-set RANK works too).
            l.launcher = Launcher::Torchrun;
            l.rank = rank;
            l.world_size = world;
            l.local_rank = num("LOCAL_RANK")?.unwrap_or(rank);
            l.local_world_size = num("LOCAL_WORLD_SIZE")?.unwrap_or(world);
            (l.master_addr, l.master_port) = (var("MASTER_ADDR"), port(&var)?);
            l.agent_store = var("TORCHELASTIC_USE_AGENT_STORE")
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        } else if let (Some(rank), Some(world)) =
            (num("OMPI_COMM_WORLD_RANK")?, num("OMPI_COMM_WORLD_SIZE")?)
        {
            l.launcher = Launcher::Mpirun;
            l.rank = rank;
            l.world_size = world;
            l.local_rank = num("OMPI_COMM_WORLD_LOCAL_RANK")?.unwrap_or(0);
            l.local_world_size = num("OMPI_COMM_WORLD_LOCAL_SIZE")?.unwrap_or(world);
            // CUDA ranks under mpirun meet at a TCPStore (env://) like torchrun's.
            (l.master_addr, l.master_port) = (var("MASTER_ADDR"), port(&var)?);
        } else if let (Some(rank), Some(world)) = (num("SLURM_PROCID")?, num("SLURM_NTASKS")?) {
            l.launcher = Launcher::Slurm;
            l.rank = rank;
            l.world_size = world;
            l.local_rank = num("SLURM_LOCALID")?.unwrap_or(0);
            l.local_world_size = match (num("SLURM_NTASKS_PER_NODE")?, var("SLURM_TASKS_PER_NODE"))
            {
                (Some(n), _) => n,
                (None, Some(list)) => {
                    let node = num("SLURM_NODEID")?.unwrap_or(0);
                    slurm_tasks_on_node(&list, node)?
                }
                (None, None) => world,
            };
            // srun sets neither: the first host of the job's node list, and a port from the
            // job id, the same on every rank (no scontrol needed).
            l.master_addr = match var("MASTER_ADDR") {
                Some(a) => Some(a),
                None => var("SLURM_JOB_NODELIST")
                    .or_else(|| var("SLURM_NODELIST"))
                    .map(|list| slurm_first_host(&list))
                    .transpose()?,
            };
            l.master_port = match port(&var)? {
                Some(p) => Some(p),
                None => num("SLURM_JOB_ID")?.map(slurm_port),
            };
        } else if let (Some(rank), Some(world)) = (num("PMI_RANK")?, num("PMI_SIZE")?) {
            l.launcher = Launcher::Mpirun;
            l.rank = rank;
            l.world_size = world;
            l.local_rank = num("MPI_LOCALRANKID")?.unwrap_or(0);
            l.local_world_size = num("MPI_LOCALNRANKS")?.unwrap_or(world);
            (l.master_addr, l.master_port) = (var("MASTER_ADDR"), port(&var)?);
        } else {
            return Ok(None);
        }
        l.check()?;
        Ok(Some(l))
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.world_size == 0 {
            return Err(Error::InvalidArgument("world size must be > 0".into()));
        }
        if self.rank >= self.world_size {
            return Err(Error::InvalidArgument(format!(
                "rank {} is not below the world size {} ({})",
                self.rank,
                self.world_size,
                self.launcher.name()
            )));
        }
        if self.local_world_size == 0 || self.local_rank >= self.local_world_size {
            return Err(Error::InvalidArgument(format!(
                "local rank {} is not below the local world size {}",
                self.local_rank, self.local_world_size
            )));
        }
        Ok(())
    }

    /// Intra-op threads for this rank on a CPU machine: the cores split between the ranks that
    /// share it, unless the user chose (OMP_NUM_THREADS).
    pub fn cpu_threads(&self, cores: usize) -> Option<usize> {
        if std::env::var_os("OMP_NUM_THREADS").is_some() || self.local_world_size <= 1 {
            return None;
        }
        Some((cores / self.local_world_size).max(1))
    }
}

/// MASTER_PORT, when set.
fn port(var: &impl Fn(&str) -> Option<String>) -> Result<Option<u16>> {
    match var("MASTER_PORT") {
        None => Ok(None),
        Some(p) => {
            p.trim().parse().map(Some).map_err(|_| {
                Error::InvalidArgument(format!("MASTER_PORT={p:?} is not a port number"))
            })
        }
    }
}

/// The rendezvous port of a Slurm job that set no MASTER_PORT: 10000 + job id mod 20000, so
/// every rank of the job agrees and jobs sharing a node rarely collide.
pub fn slurm_port(job_id: usize) -> u16 {
    10_000 + (job_id % 20_000) as u16
}

/// The first host of a Slurm host list (SLURM_JOB_NODELIST): `gpu[01-04,07],cpu3` gives
/// `gpu01`, `rack[1-2]-node[08-09]` gives `rack1-node08` (each bracket's first number, its
/// zero padding kept).
pub fn slurm_first_host(list: &str) -> Result<String> {
    let bad = || {
        Error::InvalidArgument(format!(
            "SLURM_JOB_NODELIST={list:?} is not a Slurm host list"
        ))
    };
    let mut host = String::new();
    let mut chars = list.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            ',' => break,
            '[' => {
                let inner: String = chars.by_ref().take_while(|&c| c != ']').collect();
                let first = inner.split([',', '-']).next().unwrap_or("");
                if first.is_empty() || !first.chars().all(|c| c.is_ascii_digit()) {
                    return Err(bad());
                }
                host.push_str(first);
            }
            ']' => return Err(bad()),
            c => host.push(c),
        }
    }
    if host.is_empty() {
        return Err(bad());
    }
    Ok(host)
}

/// Tasks on node `node` from SLURM_TASKS_PER_NODE, whose entries are `N` or `N(xK)` (K nodes
/// of N tasks each), in node order: `4(x2)` is 4 and 4, `2(x3),1` is 2, 2, 2 and 1.
pub fn slurm_tasks_on_node(list: &str, node: usize) -> Result<usize> {
    let bad = || {
        Error::InvalidArgument(format!(
            "SLURM_TASKS_PER_NODE={list:?} is not a Slurm task count list"
        ))
    };
    let mut first_node = 0usize;
    for entry in list.trim().split(',') {
        let (tasks, repeat) = match entry.split_once("(x") {
            Some((n, k)) => (n, k.strip_suffix(')').ok_or_else(bad)?),
            None => (entry, "1"),
        };
        let tasks: usize = tasks.trim().parse().map_err(|_| bad())?;
        let repeat: usize = repeat.trim().parse().map_err(|_| bad())?;
        if node < first_node.saturating_add(repeat) {
            return Ok(tasks);
        }
        first_node = first_node.saturating_add(repeat);
    }
    Err(Error::InvalidArgument(format!(
        "SLURM_NODEID {node} is past the {first_node} nodes of SLURM_TASKS_PER_NODE={list:?}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn torchrun_plain_and_agent_store() {
        let l = parse(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "16"),
            ("LOCAL_RANK", "1"),
            ("LOCAL_WORLD_SIZE", "8"),
            ("MASTER_ADDR", "10.1.2.3"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(l.launcher, Launcher::Torchrun);
        assert_eq!(
            (l.rank, l.world_size, l.local_rank, l.local_world_size),
            (5, 16, 1, 8)
        );
        assert_eq!(l.master_addr.as_deref(), Some("10.1.2.3"));
        assert_eq!(l.master_port, Some(29500));
        assert!(!l.agent_store);
        let l = parse(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("MASTER_PORT", "1234"),
        ])
        .unwrap()
        .unwrap();
        assert!(l.agent_store);
    }

    #[test]
    fn mpirun_slurm_pmi_and_none() {
        let l = parse(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(l.launcher, Launcher::Mpirun);
        assert!(l.under_mpi);
        assert_eq!(
            (l.rank, l.world_size, l.local_rank, l.local_world_size),
            (3, 4, 1, 2)
        );
        let l = parse(&[
            ("SLURM_PROCID", "7"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "3"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(l.launcher, Launcher::Slurm);
        assert!(!l.under_mpi);
        assert_eq!((l.rank, l.world_size, l.local_rank), (7, 8, 3));
        let l = parse(&[("PMI_RANK", "1"), ("PMI_SIZE", "2")])
            .unwrap()
            .unwrap();
        assert!(l.under_mpi);
        assert_eq!(parse(&[]).unwrap(), None);
    }

    #[test]
    fn srun_finds_its_store_and_node_without_scontrol() {
        let l = parse(&[
            ("SLURM_PROCID", "8"),
            ("SLURM_NTASKS", "9"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_NODEID", "2"),
            ("SLURM_TASKS_PER_NODE", "4(x2),1"),
            ("SLURM_JOB_NODELIST", "gpu[01-04,07],cpu3"),
            ("SLURM_JOB_ID", "123456"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(l.local_world_size, 1);
        assert_eq!(l.master_addr.as_deref(), Some("gpu01"));
        assert_eq!(l.master_port, Some(13_456));
        // The user's MASTER_ADDR/PORT win; SLURM_NTASKS_PER_NODE wins over the list.
        let l = parse(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_NTASKS_PER_NODE", "8"),
            ("SLURM_TASKS_PER_NODE", "8"),
            ("SLURM_JOB_NODELIST", "a1"),
            ("SLURM_JOB_ID", "7"),
            ("MASTER_ADDR", "10.0.0.9"),
            ("MASTER_PORT", "29400"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (l.local_world_size, l.master_addr.as_deref(), l.master_port),
            (8, Some("10.0.0.9"), Some(29400))
        );
        assert_eq!(
            slurm_first_host("rack[1-2]-node[08-09]").unwrap(),
            "rack1-node08"
        );
        assert_eq!(slurm_first_host("node7").unwrap(), "node7");
        assert_eq!(slurm_tasks_on_node("4(x2)", 1).unwrap(), 4);
        assert_eq!(slurm_tasks_on_node("2(x3),1", 3).unwrap(), 1);
        for bad in ["", "gpu[", "gpu]", "gpu[a-b]"] {
            let e = slurm_first_host(bad).unwrap_err().to_string();
            assert!(e.contains("SLURM_JOB_NODELIST"), "{bad:?}: {e}");
        }
        let e = slurm_tasks_on_node("4(x2", 0).unwrap_err().to_string();
        assert!(e.contains("SLURM_TASKS_PER_NODE"), "{e}");
        let e = slurm_tasks_on_node("4(x2)", 2).unwrap_err().to_string();
        assert!(e.contains("SLURM_NODEID 2"), "{e}");
        // A malformed list is an error naming it, not a silent fall-back to the world size.
        let e = parse(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_TASKS_PER_NODE", "4(x2"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("SLURM_TASKS_PER_NODE"), "{e}");
    }

    #[test]
    fn mpirun_reads_the_store_address_for_cuda_ranks() {
        let l = parse(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "node1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (l.master_addr.as_deref(), l.master_port),
            (Some("node1"), Some(29500))
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse(&[("RANK", "x"), ("WORLD_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("RANK"), "{e}");
        let e = parse(&[("RANK", "2"), ("WORLD_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 2"), "{e}");
    }
}
