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
            l.master_addr = var("MASTER_ADDR");
            l.master_port = match var("MASTER_PORT") {
                None => None,
                Some(p) => Some(p.trim().parse().map_err(|_| {
                    Error::InvalidArgument(format!("MASTER_PORT={p:?} is not a port number"))
                })?),
            };
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
        } else if let (Some(rank), Some(world)) = (num("SLURM_PROCID")?, num("SLURM_NTASKS")?) {
            l.launcher = Launcher::Slurm;
            l.rank = rank;
            l.world_size = world;
            l.local_rank = num("SLURM_LOCALID")?.unwrap_or(0);
            l.local_world_size = num("SLURM_NTASKS_PER_NODE")?
                .or(num("SLURM_TASKS_PER_NODE").ok().flatten())
                .unwrap_or(world);
            l.master_addr = var("MASTER_ADDR");
            l.master_port = var("MASTER_PORT").and_then(|p| p.trim().parse().ok());
        } else if let (Some(rank), Some(world)) = (num("PMI_RANK")?, num("PMI_SIZE")?) {
            l.launcher = Launcher::Mpirun;
            l.rank = rank;
            l.world_size = world;
            l.local_rank = num("MPI_LOCALRANKID")?.unwrap_or(0);
            l.local_world_size = num("MPI_LOCALNRANKS")?.unwrap_or(world);
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
