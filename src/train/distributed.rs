//! What the trainer does with the other ranks: one starting point (rank 0's parameters and
//! buffers), gradients averaged after every backward, BN statistics averaged before they are
//! used or saved, and agreement on cancelling. Every call walks the variables in name order, so
//! every rank issues the same collectives in the same order.

use tch::{Kind, Tensor};

use super::Trainer;
use crate::distributed::{self as dist, Collective};
use crate::error::{Error, Result};

use crate::distributed::BUCKET_BYTES;

/// `local` on this rank, and an error on every rank when any rank failed: what a step
/// before a collective needs, so that no rank is left waiting for one that gave up. With one
/// process, `local`.
pub(super) fn agree_on<T>(comm: &mut dyn Collective, local: Result<T>, what: &str) -> Result<T> {
    let all = comm.all_gather_f64(&[f64::from(u8::from(local.is_err()))])?;
    match local {
        Ok(_) if all.iter().any(|v| v[0] != 0.0) => Err(Error::InvalidArgument(format!(
            "another rank could not {what} (see its message)"
        ))),
        other => other,
    }
}

impl Trainer {
    /// Whether steps go through the collective engine: with several ranks, and with one when a
    /// launcher started it with the backend named (`run.dist_backend`), so a one-GPU machine
    /// runs NCCL's all-reduce, broadcast and all-gather too (sums over one rank change nothing).
    pub(super) fn distributed(&self) -> bool {
        self.launch.world_size > 1 || self.comm.backend() != "none"
    }

    /// Variables by name, trainable or not, as the engines need them: the same order on every
    /// rank (`VarStore::variables` is a HashMap whose order differs between processes).
    fn variables_by_name(&self, trainable: Option<bool>) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| trainable.is_none_or(|want| t.requires_grad() == want))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Before the first broadcast: every rank must run what rank 0 runs. A CRC32 each of the
    /// effective config (its JSON, `run.data_dir` left out since nodes may hold their own
    /// copies), the parameters' names and shapes, and the train split's size are gathered; a
    /// rank that differs fails every rank with a message naming it and the first item that
    /// differs, where otherwise mismatched collectives would hang or mix unrelated numbers.
    pub(super) fn check_ranks_agree(&mut self) -> Result<()> {
        if !self.distributed() {
            return Ok(());
        }
        let mut config = self.config.clone();
        config.run.data_dir.clear();
        let params: String = self
            .variables_by_name(None)
            .iter()
            .map(|(n, t)| format!("{n}{:?};", t.size()))
            .collect();
        let items = [
            (
                "config",
                crc32fast::hash(config.to_json_string().as_bytes()),
            ),
            (
                "parameter names and shapes",
                crc32fast::hash(params.as_bytes()),
            ),
            ("train split size", self.train.len() as u32),
        ];
        let mine: Vec<f64> = items.iter().map(|(_, v)| f64::from(*v)).collect();
        let all = self.comm.all_gather_f64(&mine)?;
        for (rank, theirs) in all.iter().enumerate().skip(1) {
            for (k, (what, _)) in items.iter().enumerate() {
                if theirs.get(k) != all[0].get(k) {
                    return Err(Error::InvalidArgument(format!(
                        "rank {rank}'s {what} differs from rank 0's: every rank must run the \
                         same config, model and data (a launcher started different commands?)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Every sync-BN group the plan will use, made at start (where a stage's per-rank batch is
    /// below `multigrid.bn_base_size`: groups of consecutive ranks, spec 1.10), so that a
    /// communicator that cannot be made fails the job before training, naming the group.
    /// Returns this rank's groups.
    pub(super) fn create_sync_bn_groups(&mut self) -> Result<Vec<Vec<usize>>> {
        if !self.distributed() {
            return Ok(Vec::new());
        }
        let (rank, world) = (self.launch.rank, self.launch.world_size);
        let mut sizes: Vec<usize> = (0..self.schedule.stages().len())
            .map(|i| self.schedule.bn_grouping(i, world as u32).sync_ranks as usize)
            .filter(|&size| size > 1 && size < world)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        let mut groups = Vec::new();
        for size in sizes {
            let first = rank / size * size;
            let group: Vec<usize> = (first..first + size).collect();
            self.comm.create_group(&group).map_err(|e| {
                Error::InvalidArgument(format!(
                    "rank {rank} cannot make its sync-BN group of ranks {group:?} ({}): {e}",
                    self.comm.backend()
                ))
            })?;
            groups.push(group);
        }
        Ok(groups)
    }

    /// Rank 0's parameters and buffers everywhere: at start and after loading a checkpoint.
    pub(super) fn sync_from_rank0(&mut self) -> Result<()> {
        // Every load of weights ends here: the statistics are the loaded ones now, and graphs
        // captured on the previous tensors are stale (a load may swap a parameter's storage).
        self.precise_at = None;
        if let Some(graphs) = &mut self.graphs {
            graphs.clear();
        }
        if !self.distributed() {
            return Ok(());
        }
        let vars: Vec<Tensor> = self
            .variables_by_name(None)
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        tch::no_grad(|| self.comm.broadcast(&vars, 0))
    }

    /// Every rank's gradients replaced by their mean over ranks: the flat buckets the
    /// gradients live in (`grads.rs`), all-reduced as they are.
    pub(super) fn all_reduce_grads(&mut self) -> Result<()> {
        if !self.distributed() {
            return Ok(());
        }
        self.grads.all_reduce_mean(self.comm.as_mut())
    }

    /// BN running statistics pooled over ranks, as PySlowFast aggregates sub-batch groups
    /// (spec 1.10): mean = mean_r mean_r, var = mean_r var_r + mean_r (mean_r - mean)^2.
    /// Called before evaluation and before a checkpoint, so every rank evaluates, and rank 0
    /// saves, the same model.
    pub(super) fn average_bn_statistics(&mut self) -> Result<()> {
        if !self.distributed() {
            return Ok(());
        }
        let vars = self.variables_by_name(Some(false));
        let mut pairs = Vec::new();
        for (name, mean) in &vars {
            let Some(prefix) = name.strip_suffix("running_mean") else {
                continue;
            };
            let var_name = format!("{prefix}running_var");
            if let Some((_, var)) = vars.iter().find(|(n, _)| *n == var_name) {
                pairs.push((mean.shallow_clone(), var.shallow_clone()));
            }
        }
        tch::no_grad(|| -> Result<()> {
            // [mean, var + mean^2] per BN: both average linearly over equal-size groups. In f64,
            // since var = E[x^2] - mean^2 cancels badly in f32 when |mean| >> std.
            let moments: Vec<Tensor> = pairs
                .iter()
                .map(|(m, v)| {
                    let (m, v) = (m.f_to_kind(Kind::Double)?, v.f_to_kind(Kind::Double)?);
                    let second = v.f_add(&m.f_square()?)?;
                    Ok(Tensor::f_cat(&[m, second], 0)?)
                })
                .collect::<Result<_>>()?;
            dist::all_reduce_mean_bucketed(
                self.comm.as_mut(),
                &moments,
                BUCKET_BYTES,
                BUCKET_BYTES,
            )?;
            let zero = crate::model::scalar(0.0f64)?;
            for ((m, v), both) in pairs.iter().zip(&moments) {
                let c = m.size()[0];
                let mean = both.f_narrow(0, 0, c)?;
                let second = both.f_narrow(0, c, c)?;
                // clamp_min with a tensor bound: tch's scalar overloads panic on a libtorch error.
                let var = second.f_sub(&mean.f_square()?)?.f_clamp_min_tensor(&zero)?;
                m.shallow_clone().f_copy_(&mean)?;
                v.shallow_clone().f_copy_(&var)?;
            }
            Ok(())
        })
    }

    /// True on every rank when any rank asked to stop, so all stop after the same step.
    pub(super) fn any_rank(&mut self, flag: bool) -> Result<bool> {
        Ok(self.any_rank_each(&[flag])?[0])
    }

    /// [`Trainer::any_rank`] for several flags in one collective.
    pub(super) fn any_rank_each(&mut self, flags: &[bool]) -> Result<Vec<bool>> {
        if !self.distributed() {
            return Ok(flags.to_vec());
        }
        let mine: Vec<f64> = flags.iter().map(|&f| f64::from(u8::from(f))).collect();
        let all = self.comm.all_gather_f64(&mine)?;
        Ok((0..flags.len())
            .map(|i| all.iter().any(|v| v[i] != 0.0))
            .collect())
    }

    /// Sums of `values` over ranks (counts of an evaluation shard, say).
    pub(super) fn sum_over_ranks(&mut self, values: &[f64]) -> Result<Vec<f64>> {
        if !self.distributed() {
            return Ok(values.to_vec());
        }
        let all = self.comm.all_gather_f64(values)?;
        Ok((0..values.len())
            .map(|i| all.iter().map(|v| v[i]).sum())
            .collect())
    }
}
