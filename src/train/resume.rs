//! The trainer's checkpoints: save, load, resume (the format is in checkpoint.rs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::Tensor;

use super::amp::LossScaler;
use super::checkpoint::{self, InitOptions, InitReport, Manifest};
use super::pretrained::{self, Source};
use super::Trainer;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::schedule::Schedule;

impl Trainer {
    fn checkpoint_root(&self) -> PathBuf {
        self.out_dir.join("checkpoints")
    }

    /// Loads the newest checkpoint under the output directory; false when there is none.
    /// A newest checkpoint whose files fail their checksums or cannot be read is passed over
    /// for the one before, with a warning naming both. Every rank loads the one rank 0 chose.
    pub fn resume(&mut self) -> Result<bool> {
        let found = checkpoint::list(&self.checkpoint_root())?;
        let mut usable = found.len();
        let mut skipped: Option<(PathBuf, Error)> = None;
        while usable > 0 {
            let dir = &found[usable - 1].1;
            match checkpoint::verify(dir) {
                Ok(_) => break,
                Err(e) => {
                    skipped.get_or_insert((dir.clone(), e));
                    usable -= 1;
                }
            }
        }
        if let Some((bad, why)) = &skipped {
            let Some((_, instead)) = found[..usable].last() else {
                // Starting over would silently discard the run: say so instead.
                return Err(Error::Data(format!(
                    "no usable checkpoint under {}: the newest, {}, is unusable ({why})",
                    self.checkpoint_root().display(),
                    bad.display()
                )));
            };
            if self.launch.rank == 0 {
                eprintln!(
                    "multigrid: warning: checkpoint {} is unusable ({why}); resuming from {}",
                    bad.display(),
                    instead.display()
                );
            }
        }
        let found = &found[..usable];
        let mine = found.last().map_or(-1.0, |(step, _)| *step as f64);
        let chosen = if self.distributed() {
            self.comm.all_gather_f64(&[mine])?[0][0]
        } else {
            mine
        };
        if chosen < 0.0 {
            return Ok(false);
        }
        let step = chosen as u64;
        // The directory as listed: a name written by hand (step_1) is read where it is. A rank
        // that cannot see it says so through `agree`, so no other rank waits for it.
        let seen = found
            .iter()
            .find(|(s, _)| *s == step)
            .map(|(_, dir)| dir.clone())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "rank {} cannot see rank 0's checkpoint {}: ranks must share the output directory",
                    self.launch.rank,
                    self.checkpoint_root()
                        .join(checkpoint::dir_name(step))
                        .display()
                ))
            });
        let dir = self.agree(seen, "see rank 0's checkpoint")?;
        self.load_checkpoint(&dir)?;
        Ok(true)
    }

    /// Where a checkpoint written by `saved_world` ranks resumes in this run's plan: the same
    /// step on as many ranks; the first step of the next epoch on another number of ranks,
    /// which only an epoch-end checkpoint has (the plan's step counts depend on the world size).
    fn resume_step(&self, m: &Manifest) -> Result<u64> {
        if m.imported_from.is_some() {
            // No step of ours: the epoch boundary it was written at, in this run's plan.
            let e = m.completed_epochs.unwrap_or(0);
            return Ok(self
                .plan
                .epoch_first_step(e.min(self.schedule.max_epoch()))
                .unwrap_or(self.plan.total_steps()));
        }
        let saved_world = m.world_size;
        let world = self.launch.world_size as u32;
        if saved_world == world {
            return Ok(m.step);
        }
        let saved_schedule = Schedule::new(m.config.clone())?;
        let saved = Plan::new(
            &saved_schedule,
            self.train.len() as u64,
            saved_world,
            0,
            m.seed,
        )?;
        if m.step >= saved.total_steps() {
            return Ok(self.plan.total_steps());
        }
        let epochs = self.schedule.max_epoch();
        match (0..epochs).find(|&e| saved.epoch_first_step(e) == Some(m.step)) {
            Some(e) => Ok(self
                .plan
                .epoch_first_step(e)
                .unwrap_or(self.plan.total_steps())),
            None => Err(Error::InvalidArgument(format!(
                "the checkpoint at step {} was written mid-epoch {} by {saved_world} ranks; this \
                 run has {world}: resume it with {saved_world} ranks, or from a checkpoint written \
                 at the end of an epoch",
                m.step, m.epoch
            ))),
        }
    }

    /// Loads a checkpoint to go on training from it. With several ranks every rank calls it;
    /// when any rank fails to read it, every rank returns an error (rather than leaving the
    /// others waiting in the broadcast).
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let loaded = self.read_checkpoint(dir);
        self.agree(loaded, "read the checkpoint")?;
        self.resumed = true;
        // Every rank read the same files; the broadcast makes that a guarantee.
        self.sync_from_rank0()
    }

    /// Parameters and BN buffers of a checkpoint, for evaluation: no optimizer state and no
    /// plan position, so a checkpoint from any number of ranks will do. Collective as
    /// `load_checkpoint`.
    pub fn load_weights(&mut self, dir: &Path) -> Result<()> {
        let loaded =
            checkpoint::read_manifest(dir).and_then(|m| Ok(self.vs.load(dir.join(&m.model))?));
        self.agree(loaded, "read the checkpoint's weights")?;
        self.sync_from_rank0()
    }

    /// One metrics line (rank 0 writes it, the others keep it): a failed write (disk full,
    /// permissions) fails every rank at the same point, so none waits in a collective that
    /// rank 0 will never enter.
    pub(super) fn write_metrics(&mut self, line: serde_json::Value) -> Result<()> {
        let written = self.metrics.write(line);
        self.agree(written, "write its metrics")
    }

    /// `local` on this rank, and an error on every rank when any rank failed: what a step
    /// before a collective needs, so that no rank is left waiting for one that gave up.
    pub(super) fn agree<T>(&mut self, local: Result<T>, what: &str) -> Result<T> {
        super::distributed::agree_on(self.comm.as_mut(), local, what)
    }

    fn read_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let m = checkpoint::read_manifest(dir)?;
        let next_step = self.resume_step(&m)?;
        self.vs.load(dir.join(&m.model))?;
        let mut state = Tensor::read_safetensors(dir.join(&m.optimizer))?
            .into_iter()
            .map(|(k, t)| Ok((k, t.f_to_device(self.device)?)))
            .collect::<Result<Vec<(String, Tensor)>>>()?;
        let mut scaler = LossScaler::default();
        scaler.take_state(&mut state)?;
        if let Some(s) = &mut self.scaler {
            *s = scaler;
        }
        self.opt.load_state(state)?;
        self.next_step = next_step;
        self.clips_seen = m.clips_seen;
        self.wall_before = m.wall_seconds;
        self.clock = Instant::now();
        Ok(())
    }

    /// Wall-clock seconds of the run: this trainer's lifetime plus a resumed run's past.
    pub fn wall_seconds(&self) -> f64 {
        self.wall_before + self.clock.elapsed().as_secs_f64()
    }

    /// Writes a checkpoint of the current position under the output directory. Collective:
    /// every rank calls it; BN statistics are pooled over ranks, rank 0 writes, and all return
    /// once the checkpoint is complete.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        self.average_bn_statistics()?;
        let written = if self.launch.rank == 0 {
            self.write_checkpoint()
        } else {
            Ok(self
                .checkpoint_root()
                .join(checkpoint::dir_name(self.next_step)))
        };
        // Also the barrier: every rank returns once rank 0 has written (or failed to).
        self.agree(written, "write the checkpoint")
    }

    /// Epochs completed when the next step is the first of an epoch (or the run is over).
    fn completed_epochs(&self) -> Option<u32> {
        (0..=self.schedule.max_epoch())
            .rev()
            .find(|&e| self.plan.epoch_first_step(e) == Some(self.next_step))
    }

    fn write_checkpoint(&self) -> Result<PathBuf> {
        let wall_seconds = self.wall_seconds();
        let epoch = self
            .plan
            .step(self.next_step.min(self.plan.total_steps() - 1))
            .map_or(0, |s| s.epoch);
        let manifest = Manifest {
            step: self.next_step,
            epoch,
            wall_seconds,
            clips_seen: self.clips_seen,
            model: "model.safetensors".into(),
            optimizer: "optimizer.safetensors".into(),
            seed: self.config.run.seed,
            world_size: self.launch.world_size as u32,
            config: self.config.clone(),
            completed_epochs: self.completed_epochs(),
            imported_from: None,
            checksums: Default::default(),
        };
        checkpoint::save(
            &self.checkpoint_root(),
            &manifest,
            self.config.run.keep_checkpoints,
            |dir| {
                // safetensors takes contiguous tensors only; with run.memory_format
                // channels_last_3d the conv weights and their momentum are not (a no-op
                // otherwise).
                let write = |tensors: Vec<(String, Tensor)>, file: &str| -> Result<()> {
                    let tensors = tensors
                        .into_iter()
                        .map(|(k, t)| Ok((k, t.f_contiguous()?)))
                        .collect::<Result<Vec<_>>>()?;
                    let named: Vec<(&str, &Tensor)> =
                        tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
                    Ok(Tensor::write_safetensors(&named, dir.join(file))?)
                };
                write(
                    self.vs.variables().into_iter().collect(),
                    "model.safetensors",
                )?;
                let mut state = self.opt.state();
                if let Some(s) = &self.scaler {
                    state.extend(s.state()?);
                }
                write(state.into_iter().collect(), "optimizer.safetensors")
            },
        )
    }
}

/// The classifier, which fine-tuning replaces when the class count changes.
const HEAD: &str = "head.projection.";

impl Trainer {
    /// Initialises the model from another run's weights, as PySlowFast's fine-tuning
    /// (TRAIN.CHECKPOINT_FILE_PATH with CHECKPOINT_EPOCH_RESET): parameters and BN statistics
    /// by name from `path` (a checkpoint directory, a run directory for its newest checkpoint,
    /// a `.safetensors` file, or a PySlowFast `.pyth`, converted by scripts/pyth.py), then
    /// training from step 0 with a fresh optimizer. When the class count differs, the
    /// classifier (`head.projection.*`) is re-initialised; any other tensor missing, of
    /// another shape, or not in the model is an error naming it, and the model is left as it
    /// was. Collective: every rank calls it; rank 0 reads and the others receive its weights.
    /// [`Trainer::init_from_with`] also reads Caffe2 and 2D ImageNet weights.
    pub fn init_from(&mut self, path: &Path) -> Result<InitReport> {
        self.init_from_with(path, InitOptions::default())
    }

    /// [`Trainer::init_from`] from more sources, told by the file: besides ours and `.pyth`,
    /// PySlowFast's Caffe2 checkpoints (`.pkl`, CHECKPOINT_TYPE caffe2; read by
    /// scripts/pyth.py, blob names converted as PySlowFast's c2_model_loading) and 2D ImageNet
    /// ResNets with torchvision's names (`.pth` or `.safetensors`; CHECKPOINT_INFLATE): mapped
    /// onto pathway 0 (SlowFast's slow pathway, or a C2D, I3D or Slow model's only one), each
    /// 2D kernel repeated over the 3D kernel's temporal size and divided by it, the classifier
    /// (`fc`) re-initialised as for another class count. Both serve every `model.arch`. With
    /// `opts.skip_missing`, what does not map is listed in the report and keeps its initial
    /// values (a 2D ResNet has no fast pathway, lateral connections, non-local blocks or
    /// head); without it, an error names it.
    pub fn init_from_with(&mut self, path: &Path, opts: InitOptions) -> Result<InitReport> {
        let read = if self.launch.rank == 0 {
            self.read_init(path, opts)
        } else {
            Ok(InitReport::default())
        };
        let report = self.agree(read, "initialise from the checkpoint")?;
        self.sync_from_rank0()?;
        self.opt = super::optim::Sgd::new(&self.vs, &self.config.solver);
        if let Some(s) = &mut self.scaler {
            *s = LossScaler::default();
        }
        self.next_step = 0;
        self.clips_seen = 0;
        self.wall_before = 0.0;
        self.clock = Instant::now();
        self.init_report = Some(report.clone());
        Ok(report)
    }

    /// What the last [`Trainer::init_from_with`] loaded: rank 0's report (it reads the file;
    /// the other ranks receive the weights by broadcast and report nothing loaded).
    pub fn init_report(&self) -> Option<&InitReport> {
        self.init_report.as_ref()
    }

    fn read_init(&mut self, path: &Path, opts: InitOptions) -> Result<InitReport> {
        if !path.is_file() {
            let dir = checkpoint::resolve(path)?;
            let m = checkpoint::read_manifest(&dir)?;
            return self.load_file(&dir.join(&m.model), path, None, Vec::new(), opts);
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "safetensors" {
            return self.load_file(path, path, None, Vec::new(), opts);
        }
        let tmp = std::env::temp_dir().join(format!(
            "multigrid-init-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&tmp).map_err(|source| Error::Io {
            path: tmp.clone(),
            source,
        })?;
        let model = tmp.join("model.safetensors");
        let found = if ext == "pkl" {
            checkpoint::convert_caffe2(path, &model, false)
        } else {
            checkpoint::convert_pyth(path, &tmp, false)
        };
        // A .pkl is Caffe2's whatever its names; other files are told by them.
        let source = (ext == "pkl").then_some(Source::Caffe2);
        let done = found.and_then(|found| self.load_file(&model, path, source, found.notes, opts));
        let _ = std::fs::remove_dir_all(&tmp);
        done
    }

    /// Reads `file`, maps its names onto ours by what they are (`source`, else
    /// [`Source::of`] its names), and loads them.
    fn load_file(
        &mut self,
        file: &Path,
        shown: &Path,
        source: Option<Source>,
        mut notes: Vec<String>,
        opts: InitOptions,
    ) -> Result<InitReport> {
        let raw = Tensor::read_safetensors(file).map_err(|e| Error::Decode {
            path: file.to_path_buf(),
            reason: e.to_string(),
        })?;
        let source = source.unwrap_or_else(|| Source::of(raw.iter().map(|(k, _)| k.as_str())));
        // Our name -> the file's name (for the errors) and the tensor.
        let mut theirs = BTreeMap::new();
        let mut unmapped = Vec::new();
        let mut solver = 0;
        for (name, t) in raw {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            let ours = match source {
                Source::Ours => Some(name.clone()),
                Source::Caffe2 if pretrained::caffe2_solver_state(&name) => {
                    solver += 1;
                    continue;
                }
                Source::Caffe2 => pretrained::caffe2_name(&name),
                Source::Torchvision2d => {
                    pretrained::torchvision_name(&name, self.config.model.depth != 18)
                }
            };
            match ours {
                Some(ours) => {
                    theirs.insert(ours, (name, t));
                }
                None => unmapped.push(name),
            }
        }
        match source {
            Source::Ours => {}
            Source::Caffe2 => notes.push(format!(
                "Caffe2 blob names converted to ours; {solver} blobs of solver state \
                 (momentum, lr, model_iter) left out"
            )),
            Source::Torchvision2d => notes.push(
                "a 2D ResNet with torchvision's names: loaded into pathway 0, its kernels \
                 inflated over time"
                    .into(),
            ),
        }
        self.load_by_name(theirs, unmapped, source, shown, notes, opts)
    }

    /// Copies `theirs` (by our name: the file's name and the tensor) into the model after
    /// checking them all (`unmapped`: names of the file that map to none of ours; `shown`: the
    /// path the errors name).
    fn load_by_name(
        &mut self,
        theirs: BTreeMap<String, (String, Tensor)>,
        unmapped: Vec<String>,
        source: Source,
        shown: &Path,
        notes: Vec<String>,
        opts: InitOptions,
    ) -> Result<InitReport> {
        let mut ours = self.vs.variables().into_iter().collect::<Vec<_>>();
        ours.sort_by(|a, b| a.0.cmp(&b.0));
        // The class count differs when the classifier's input width matches and its output
        // does not: then the head is PySlowFast's "not loaded" layer, and only it. A 2D
        // ImageNet classifier never fits (its input has no fast pathway): the same.
        let head_w = format!("{HEAD}weight");
        let new_classes = match (
            theirs.get(&head_w).map(|(_, t)| t.size()),
            ours.iter()
                .find(|(k, _)| *k == head_w)
                .map(|(_, t)| t.size()),
        ) {
            (Some(a), Some(b)) if a.len() == 2 && b.len() == 2 && a[1] == b[1] && a[0] != b[0] => {
                Some(a[0])
            }
            (Some(a), Some(b)) if source == Source::Torchvision2d && a != b => a.first().copied(),
            _ => None,
        };
        let skip = opts.skip_missing;
        let mut problems = Vec::new();
        let mut skipped = Vec::new();
        let mut unused = Vec::new();
        let mut copies = Vec::new();
        let mut reinit = Vec::new();
        let mut inflated = 0;
        for (name, var) in &ours {
            if new_classes.is_some() && name.starts_with(HEAD) {
                reinit.push((name.clone(), var.shallow_clone()));
                continue;
            }
            let size = var.size();
            let t = match theirs.get(name) {
                None if skip => {
                    skipped.push(format!("{name} {size:?}: not in the checkpoint"));
                    continue;
                }
                None => {
                    problems.push(format!("{name} {size:?} is missing"));
                    continue;
                }
                Some((_, t)) => t,
            };
            if t.size() == size {
                copies.push((var.shallow_clone(), t.shallow_clone()));
                continue;
            }
            // A Caffe2 blob of fewer dimensions, the rest ones in the model: reshaped, as
            // PySlowFast's loader pads the blob's shape.
            let n = t.dim();
            if source == Source::Caffe2
                && n < size.len()
                && t.size()[..] == size[..n]
                && size[n..].iter().all(|&d| d == 1)
            {
                copies.push((var.shallow_clone(), t.f_reshape(&size)?));
                continue;
            }
            if source == Source::Torchvision2d {
                if let Some(v) = pretrained::inflate(t, &size)? {
                    copies.push((var.shallow_clone(), v));
                    inflated += 1;
                    continue;
                }
            }
            let why = format!(
                "{name} is {:?} in the checkpoint and {size:?} in the model",
                t.size()
            );
            if skip {
                skipped.push(why);
            } else {
                problems.push(why);
            }
        }
        let known: std::collections::HashSet<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
        let what = match source {
            Source::Caffe2 => " (a Caffe2 blob)",
            Source::Torchvision2d => " (torchvision's)",
            Source::Ours => "",
        };
        let extra = unmapped
            .iter()
            .map(|name| format!("{name}{what} maps to no tensor of the model"))
            .chain(
                theirs
                    .iter()
                    .filter(|(k, _)| !known.contains(k.as_str()))
                    .map(|(name, (from, _))| {
                        if from == name {
                            format!("{name} is not in the model")
                        } else {
                            // Converted to a name this model lacks (a non-local block's, say).
                            format!("{from}{what}, as {name}, maps to no tensor of the model")
                        }
                    }),
            );
        if skip {
            unused.extend(extra);
        } else {
            problems.extend(extra);
        }
        if !problems.is_empty() {
            let n = problems.len();
            problems.truncate(6);
            let more = if n > 6 {
                format!("; and {} more", n - 6)
            } else {
                String::new()
            };
            return Err(Error::InvalidArgument(format!(
                "cannot initialise from {}: {}{more} (is the config's model, depth {} width {}, \
                 the checkpoint's? To load what fits and list the rest, skip what does not map: \
                 --init-skip-missing, MG_INIT_SKIP_MISSING in C, skip_missing=True in Python)",
                shown.display(),
                problems.join("; "),
                self.config.model.depth,
                self.config.model.width_per_group
            )));
        }
        if copies.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "cannot initialise from {}: none of its tensors fits the model",
                shown.display()
            )));
        }
        tch::no_grad(|| -> Result<()> {
            for (var, t) in &copies {
                var.shallow_clone().f_copy_(t)?;
            }
            // PySlowFast's head init: weight ~ N(0, 0.01), bias 0.
            for (name, var) in &reinit {
                let mut v = var.shallow_clone();
                if name.ends_with(".weight") {
                    let _ = v.f_normal_(0.0, 0.01)?;
                } else {
                    let _ = v.f_zero_()?;
                }
            }
            Ok(())
        })?;
        Ok(InitReport {
            source: shown.to_path_buf(),
            loaded: copies.len(),
            reinitialised: reinit.into_iter().map(|(k, _)| k).collect(),
            checkpoint_classes: new_classes,
            notes,
            inflated,
            skipped,
            unused,
        })
    }
}
