//! Validation and test: centred views or K x C views, softmax scores summed.

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::{find_split, open_split, torch, Accuracy, Trainer};
use crate::collate::{self, batch_len, eval_params, slow_indices, ViewMode};
use crate::data::Dataset;
use crate::error::{Error, Result};

impl Trainer {
    /// `split` when every rank can open it, None when it is absent on every rank, and an error
    /// on every rank when it exists but cannot be read (a corrupt store, a bad list) on any rank,
    /// or is absent on some ranks only: the ranks must agree, or their collectives would no
    /// longer pair up.
    fn open_split_on_every_rank(&mut self, split: &str) -> Result<Option<Dataset>> {
        let dir = PathBuf::from(&self.config.run.data_dir);
        let found = find_split(&dir, split);
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

    pub(super) fn evaluate_split(
        &mut self,
        split: &str,
        mode: ViewMode,
    ) -> Result<Option<Accuracy>> {
        let Some(dataset) = self.open_split_on_every_rank(split)? else {
            return Ok(None);
        };
        self.precise_bn()?;
        self.average_bn_statistics()?;
        self.evaluate(&dataset, mode).map(Some)
    }

    /// Accuracy on the data directory's `split` ("test": the configured K x C views; any other
    /// split: a centred view), without precise BN.
    pub fn evaluate_named(&mut self, split: &str) -> Result<Accuracy> {
        let dataset = open_split(Path::new(&self.config.run.data_dir), split);
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

    /// Final test: K temporal x up to 3 spatial views per clip, softmax averaged.
    pub(super) fn test(&mut self) -> Result<Option<Accuracy>> {
        let Some(dataset) = self.open_split_on_every_rank("test")? else {
            return Ok(None);
        };
        self.precise_bn()?;
        self.average_bn_statistics()?;
        let k = self.config.run.test_num_temporal_views;
        let crops = self.config.run.test_num_spatial_crops;
        self.evaluate(
            &dataset,
            ViewMode::Test {
                temporal: k,
                num_temporal: k,
                spatial: crops,
            },
        )
        .map(Some)
    }

    /// Accuracy on `dataset` at the default shape (T0 frames, the test crop): a centred view for
    /// `ViewMode::Val`; for `ViewMode::Test { num_temporal: K, spatial: C, .. }` all K x C
    /// views, with softmax scores summed.
    pub fn evaluate(&mut self, dataset: &Dataset, mode: ViewMode) -> Result<Accuracy> {
        let (t, s) = (self.config.data.num_frames, self.config.data.test_crop_size);
        let rate = self.config.data.sampling_rate;
        let views: Vec<ViewMode> = match mode {
            ViewMode::Val => vec![ViewMode::Val],
            ViewMode::Test {
                num_temporal,
                spatial,
                ..
            } => {
                let crops: Vec<u32> = if spatial >= 3 { vec![0, 1, 2] } else { vec![1] };
                (0..num_temporal)
                    .flat_map(|k| {
                        crops.iter().map(move |&c| ViewMode::Test {
                            temporal: k,
                            num_temporal,
                            spatial: c,
                        })
                    })
                    .collect()
            }
        };
        let norm = collate::normalize_of(&self.plan);
        let one = batch_len(1, t, s);
        let bs = self.config.run.eval_batch_size;
        let alpha = self.config.model.alpha;
        let ts = slow_indices(t, alpha).len() as u32;
        let (mut top1, mut top5, mut count) = (0usize, 0usize, 0usize);
        // Rank r scores clips r, r + W, ...: every clip exactly once, no padding duplicates.
        let (rank, world) = (self.launch.rank, self.launch.world_size);
        let indices: Vec<usize> = (rank..dataset.len()).step_by(world).collect();
        for chunk in indices.chunks(bs) {
            let n = chunk.len();
            let mut scores: Option<Tensor> = None;
            for view in &views {
                let mut fast = vec![0f32; n * one];
                for (k, &i) in chunk.iter().enumerate() {
                    let choose = |f, h, w| eval_params(*view, f, h, w, t, s, rate);
                    dataset.collate_clip(
                        i,
                        t,
                        s,
                        &norm,
                        choose,
                        &mut fast[k * one..(k + 1) * one],
                    )?;
                }
                let mut slow = vec![0f32; batch_len(n, ts, s)];
                collate::pack_slow(&fast, n, t, s, alpha, &mut slow)?;
                let (slow, fast) =
                    self.inputs(&slow, &fast, n as i64, i64::from(t), i64::from(s))?;
                let p = tch::no_grad(|| {
                    self.model
                        .forward(&slow, &fast, 1, false)?
                        .f_softmax(-1, Kind::Float)
                        .map_err(torch)
                })?;
                scores = Some(match scores {
                    Some(acc) => acc + p,
                    None => p,
                });
            }
            let Some(scores) = scores else { continue };
            let labels: Vec<i64> = chunk
                .iter()
                .map(|&i| dataset.label(i).map(i64::from))
                .collect::<Result<_>>()?;
            let labels = Tensor::from_slice(&labels).to_device(self.device);
            let k5 = scores.size()[1].min(5);
            let (_, top) = scores.topk(k5, 1, true, true);
            let hit = top.eq_tensor(&labels.unsqueeze(1));
            top1 += hit.narrow(1, 0, 1).sum(Kind::Int64).int64_value(&[]) as usize;
            top5 += hit.sum(Kind::Int64).int64_value(&[]) as usize;
            count += n;
        }
        let sums = self.sum_over_ranks(&[top1 as f64, top5 as f64, count as f64])?;
        let (top1, top5, count) = (sums[0] as usize, sums[1] as usize, sums[2] as usize);
        let pct = |h: usize| 100.0 * h as f64 / count.max(1) as f64;
        Ok(Accuracy {
            top1: pct(top1),
            top5: pct(top5),
            clips: count,
        })
    }
}
