//! Validation and test as PySlowFast scores them: training-style clips at the stage's shape or
//! centred views for validation, K x C views for the test, softmax scores summed.

use std::path::PathBuf;

use tch::{Kind, Tensor};

use super::precise_bn::Serving;
use super::{find_split, open_split, Accuracy, Trainer};
use crate::collate::{self, eval_draw, FrameRule, Rng, ViewMode};
use crate::data::{Assembly, Dataset, Labels};
use crate::error::{Error, Result};
use crate::model::HeadPool;
use crate::schedule::{EnsembleMethod, ValProtocol};

impl Trainer {
    /// `split` when every rank can open it, None when it is absent on every rank, and an error
    /// on every rank when it exists but cannot be read (a corrupt store, a bad list) on any rank,
    /// or is absent on some ranks only: the ranks must agree, or their collectives would no
    /// longer pair up.
    fn open_split_on_every_rank(&mut self, split: &str) -> Result<Option<Dataset>> {
        let dir = PathBuf::from(&self.config.run.data_dir);
        let found = find_split(&self.config, split);
        let (missing, failed) = match &found {
            Ok(Some(_)) => (0.0, 0.0),
            Ok(None) => (1.0, 0.0),
            Err(_) => (0.0, 1.0),
        };
        let sums = self.sum_over_ranks(&[missing, failed])?;
        let opened = found?;
        if sums[1] > 0.0 {
            return Err(Error::Data(format!(
                "the {split} split of {} cannot be read on another rank",
                dir.display()
            )));
        }
        if sums[0] == 0.0 {
            Ok(opened)
        } else if sums[0] as usize == self.launch.world_size {
            Ok(None)
        } else {
            Err(Error::InvalidArgument(format!(
                "the {split} split of {} opens on some ranks and not on others",
                dir.display()
            )))
        }
    }

    /// Mid-run validation after a step of `stage` in `epoch` (`run.val_protocol`), with
    /// precise BN at the shape it scores.
    /// Returns the accuracy and the [frames, crop] it was scored at.
    pub(super) fn validate(
        &mut self,
        stage: usize,
        epoch: u32,
    ) -> Result<Option<(Accuracy, [u32; 2])>> {
        let Some(dataset) = self.open_split_on_every_rank("val")? else {
            return Ok(None);
        };
        let (at, views) = self.val_views(Some(stage), epoch)?;
        self.precise_bn(at)?;
        self.average_bn_statistics()?;
        let acc = self.score(&dataset, at, &views)?;
        Ok(Some((acc, [at.t, at.s])))
    }

    /// Accuracy on the data directory's `split` without precise BN: "test" scores the
    /// configured K x C views, any other split follows `run.val_protocol` at the base shape.
    pub fn evaluate_named(&mut self, split: &str) -> Result<Accuracy> {
        let dataset = open_split(&self.config, split);
        // Collective from here on: every rank learns whether every rank has the split.
        let failed = self.any_rank(dataset.is_err())?;
        let dataset = match dataset {
            Ok(d) if !failed => d,
            Ok(_) => {
                return Err(Error::InvalidArgument(format!(
                    "another rank cannot open the {split} split of {}",
                    self.config.run.data_dir
                )))
            }
            Err(e) => return Err(e),
        };
        // Ranks that trained step by step hold their own running statistics.
        self.average_bn_statistics()?;
        let mode = if split == "test" {
            ViewMode::Test {
                temporal: 0,
                num_temporal: self.config.run.test_num_temporal_views,
                spatial: self.config.run.test_num_spatial_crops,
            }
        } else {
            ViewMode::Val
        };
        self.evaluate(&dataset, mode)
    }

    /// Final test: K temporal x C spatial views per clip, softmax averaged, after precise BN
    /// at the test shape (skipped when the last validation already computed it there).
    pub(super) fn test(&mut self) -> Result<Option<Accuracy>> {
        let Some(dataset) = self.open_split_on_every_rank("test")? else {
            return Ok(None);
        };
        let (at, views) = self.test_views(
            self.config.run.test_num_temporal_views,
            self.config.run.test_num_spatial_crops,
            dataset.frame_rule(),
        );
        self.precise_bn(at)?;
        self.average_bn_statistics()?;
        self.score(&dataset, at, &views).map(Some)
    }

    /// Accuracy on `dataset` without precise BN. `ViewMode::Val` follows `run.val_protocol`
    /// (`train`: one training-style clip per video at the base shape, seeded as epoch 0;
    /// `centre`: the centred view at the test crop); `ViewMode::Test { num_temporal: K,
    /// spatial: C, .. }` scores all K x C views at the test crop, softmax scores summed.
    pub fn evaluate(&mut self, dataset: &Dataset, mode: ViewMode) -> Result<Accuracy> {
        let (at, views) = match mode {
            ViewMode::Val => self.val_views(None, 0)?,
            ViewMode::Test {
                num_temporal,
                spatial,
                ..
            } => self.test_views(num_temporal, spatial, dataset.frame_rule()),
        };
        self.score(dataset, at, &views)
    }

    /// Validation's shape and views: `train` at `stage`'s shape (the base shape without one),
    /// `centre` at the test shape.
    pub(super) fn val_views(&self, stage: Option<usize>, epoch: u32) -> Result<(Serving, Views)> {
        if self.config.run.val_protocol == ValProtocol::Centre {
            let at = self.serving_test();
            return Ok((at, Views::Fixed(vec![(ViewMode::Val, at.s)])));
        }
        let at = match stage {
            Some(stage) => self.serving_stage(stage)?,
            None => self.serving_base(),
        };
        Ok((at, Views::Train { epoch }))
    }

    /// The test shape and PySlowFast's test views: Kinetics' ([`collate::test_views`]), or
    /// Charades' and SSv2's ([`collate::frame_list_test_views`]).
    fn test_views(&self, num_temporal: u32, crops: u32, rule: FrameRule) -> (Serving, Views) {
        let at = self.serving_test();
        let views = if rule == FrameRule::Linspace {
            let jmin = self.config.data.train_jitter_scales[0];
            collate::test_views(num_temporal, crops, at.s, jmin)
        } else {
            collate::frame_list_test_views(num_temporal, crops, at.s)
        };
        (at, Views::Fixed(views))
    }

    /// The base shape (`data.num_frames` x `data.train_crop_size`) with its augmentation.
    fn serving_base(&self) -> Serving {
        let d = &self.config.data;
        Serving {
            s: d.train_crop_size,
            jitter: d.train_jitter_scales,
            ..self.serving_test()
        }
    }

    /// The head as PySlowFast builds it: with the short cycle it pools adaptively; without, a
    /// fixed pool of the base training feature maps, so a larger test input is scored fully
    /// convolutionally.
    fn head_pool(&self) -> HeadPool {
        if self.config.multigrid.short_cycle {
            return HeadPool::Global;
        }
        let d = &self.config.data;
        self.model
            .head_pool_fixed(i64::from(d.num_frames), i64::from(d.train_crop_size))
    }

    /// Scores every clip of `dataset` (rank r takes clips r, r + W, ...) at `at`'s shape over
    /// `views`, combining the views' scores by `data.ensemble_method` (sum or max), with the
    /// head's activation (`model.head_act`). Multi-label tasks also report mean average
    /// precision over the whole split.
    fn score(&mut self, dataset: &Dataset, at: Serving, views: &Views) -> Result<Accuracy> {
        let (t, s) = (at.t, at.s);
        let data = &self.config.data;
        let rate = data.sampling_rate;
        let rule = dataset.frame_rule();
        let multi = data.multi_label;
        let act = self.config.model.head_act;
        let max_ensemble = data.ensemble_method == EnsembleMethod::Max;
        let classes = self.config.model.num_classes as usize;
        let fixed: &[(ViewMode, u32)] = match views {
            Views::Fixed(v) => v,
            Views::Train { .. } => &[(ViewMode::Val, 0)],
        };
        let bs = self.config.run.eval_batch_size;
        let alpha = self.config.model.collate_alpha();
        let pool = self.head_pool();
        let (mut top1, mut top5, mut count) = (0usize, 0usize, 0usize);
        // Multi-label: each clip's combined scores and targets in clip order; each clip is
        // scored by one rank, so a sum over ranks assembles the split.
        let (mut all_scores, mut all_targets) = if multi {
            let len = dataset.len() * classes;
            (vec![0f64; len], vec![0f64; len])
        } else {
            (Vec::new(), Vec::new())
        };
        // The first view's batch records the clips' classes (Charades' from its frames).
        let truth = if multi {
            Labels::MultiHot { classes }
        } else {
            Labels::Classes
        };
        let seed = self.config.run.seed ^ 0x7A1;
        // Rank r scores clips r, r + W, ...: every clip exactly once, no padding duplicates.
        let (rank, world) = (self.launch.rank, self.launch.world_size);
        let indices: Vec<usize> = (rank..dataset.len()).step_by(world).collect();
        for chunk in indices.chunks(bs) {
            let n = chunk.len();
            let mut scores: Option<Tensor> = None;
            let (mut labels, mut targets) = (Vec::new(), None);
            for (v, &(view, short)) in fixed.iter().enumerate() {
                let draw = |index, frames, height, width| match views {
                    Views::Train { epoch } => {
                        let mut rng = Rng::new(seed, u64::from(*epoch), index);
                        at.draw(&mut rng, data, rule, false, frames, height, width)
                    }
                    Views::Fixed(_) => {
                        eval_draw(rule, view, frames, height, width, t, s, rate, short)
                    }
                };
                let recorded = if v == 0 { truth } else { Labels::None };
                let batch = Assembly::new(dataset, &self.plan, [t, s], alpha, &draw)
                    .labels(recorded)
                    .assemble(self.next_step, n, &mut chunk.iter().map(|&i| i as u64))?;
                let (slow, fast) = self.inputs(&batch)?;
                if v == 0 {
                    (labels, targets) = (batch.labels, batch.targets);
                }
                let p = tch::no_grad(|| self.model.eval_scores(&slow, &fast, pool, act))?;
                scores = Some(match scores {
                    Some(acc) if max_ensemble => acc.f_maximum(&p)?,
                    Some(acc) => acc.f_add(&p)?,
                    None => p,
                });
            }
            let Some(scores) = scores else { continue };
            if let Some(targets) = targets {
                let sc =
                    Vec::<f32>::try_from(scores.f_to_device(tch::Device::Cpu)?.f_flatten(0, -1)?)?;
                for (k, &i) in chunk.iter().enumerate() {
                    let row = &targets[k * classes..(k + 1) * classes];
                    let clip = &sc[k * classes..(k + 1) * classes];
                    let (h1, h5) = hits(clip, row);
                    top1 += usize::from(h1);
                    top5 += usize::from(h5);
                    for c in 0..classes {
                        all_scores[i * classes + c] = f64::from(clip[c]);
                        all_targets[i * classes + c] = f64::from(row[c]);
                    }
                }
                count += n;
                continue;
            }
            let labels = Tensor::f_from_slice(&labels)?.f_to_device(self.device)?;
            let k5 = scores.size()[1].min(5);
            let (_, top) = scores.f_topk(k5, 1, true, true)?;
            let hit = top.f_eq_tensor(&labels.f_unsqueeze(1)?)?;
            let count_hits = |h: &Tensor| -> Result<usize> {
                Ok(h.f_sum(Kind::Int64)?.f_int64_value(&[])? as usize)
            };
            top1 += count_hits(&hit.f_narrow(1, 0, 1)?)?;
            top5 += count_hits(&hit)?;
            count += n;
        }
        let mut values = vec![top1 as f64, top5 as f64, count as f64];
        values.extend_from_slice(&all_scores);
        values.extend_from_slice(&all_targets);
        let sums = self.sum_over_ranks(&values)?;
        let (top1, top5, count) = (sums[0] as usize, sums[1] as usize, sums[2] as usize);
        let map = if multi {
            let len = all_scores.len();
            let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
            let (sc, tg) = (f32s(&sums[3..3 + len]), f32s(&sums[3 + len..]));
            Some(100.0 * super::map::mean_average_precision(&sc, &tg, classes)?)
        } else {
            None
        };
        let pct = |h: usize| 100.0 * h as f64 / count.max(1) as f64;
        Ok(Accuracy {
            top1: pct(top1),
            top5: pct(top5),
            clips: count,
            map,
        })
    }
}

/// Whether the top-1 and the top-5 scores of a multi-label clip include one of its classes.
fn hits(scores: &[f32], targets: &[f32]) -> (bool, bool) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let positive = |k: usize| order.iter().take(k).any(|&c| targets[c] > 0.5);
    (positive(1), positive(5))
}

/// The views an evaluation scores each clip with.
pub(super) enum Views {
    /// PySlowFast's validation: one clip drawn as in training, seeded by (seed, epoch, clip).
    Train { epoch: u32 },
    /// Deterministic views, each with the short side its frames are resized to.
    Fixed(Vec<(ViewMode, u32)>),
}
