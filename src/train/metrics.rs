//! Metrics as JSON lines (one object per logged step or evaluation), appended and flushed as
//! they come so a killed run keeps what it logged.
//!
//! Every line is a [`Record`]: the trainer writes them and the readers (`multigrid bench
//! speedup`, `plot`, `bench dist`) read them back through the same types, with
//! [`read_records`]. Each line carries its kind in `"type"`; keys are snake_case and an absent
//! value is `null`. Fields that older runs did not write yet are optional (or default) when
//! read, so their metrics stay readable.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::schedule::ValProtocol;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// Each shape of the plan run once before training (`run.warmup_shapes`).
    Warmup(WarmupRecord),
    /// Every `run.log_period` steps and before each evaluation.
    Train(TrainRecord),
    /// A mid-run validation.
    Eval(EvalRecord),
    /// Precise BN statistics recomputed.
    PreciseBn(PreciseBnRecord),
    /// Where the fit's wall-clock time went, written once at its end.
    Timing(TimingRecord),
    /// The fit's outcome, its last line.
    Summary(SummaryRecord),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmupRecord {
    /// Distinct (batch, frames, crop, BN groups) shapes run.
    pub shapes: usize,
    pub seconds: f64,
    /// With `run.cudnn_benchmark = "auto"` on CUDA: the (batch, frames, crop, BN groups)
    /// whose convolutions cuDNN searched; the others use its heuristics.
    #[serde(default)]
    pub cudnn_searched: Option<Vec<[u32; 4]>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    pub step: u64,
    pub epoch: u32,
    pub stage: u32,
    /// [clips on this rank, frames, crop].
    pub shape: [u64; 3],
    pub bn_groups: u32,
    /// Ranks pooling BN statistics (1 in runs from before sync BN).
    #[serde(default = "one")]
    pub bn_sync_ranks: u32,
    pub lr: f64,
    /// This step's loss, the mean over ranks.
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// Clips over all ranks per second since the last train line.
    pub clips_per_s: f64,
    /// Seconds waited for the loader, and clips that failed to load, over the fit so far.
    pub data_wait_s: f64,
    pub data_failures: u64,
    pub wall_s: f64,
    pub clips_seen: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// "val".
    pub split: String,
    pub step: u64,
    pub epoch: u32,
    #[serde(deserialize_with = "nan_if_null")]
    pub top1: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub top5: f64,
    /// Mean average precision (multi-label tasks); null otherwise.
    pub map: Option<f64>,
    pub clips: u64,
    pub wall_s: f64,
    pub clips_seen: u64,
    /// [frames, crop] scored at (absent in older runs).
    pub shape: Option<[u32; 2]>,
    /// `run.val_protocol` (absent in older runs).
    pub protocol: Option<ValProtocol>,
    /// Seconds the validation took, its precise BN included (absent in older runs).
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreciseBnRecord {
    /// The next step to train.
    pub step: u64,
    /// [clips per batch, frames, crop].
    pub shape: [u64; 3],
    pub bn_groups: u32,
    pub batches: u64,
    pub failed_clips: u64,
    pub seconds: f64,
    pub wall_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingRecord {
    /// Per (stage, frames, crop, batch), in that order.
    pub shapes: Vec<ShapeTiming>,
    /// Seconds stepping, over all shapes.
    pub step_s: f64,
    pub data_wait_s: f64,
    /// Evaluation and checkpoints, each with the precise BN it ran.
    pub eval_s: f64,
    pub checkpoint_s: f64,
    /// All precise BN of the fit, wherever it ran.
    pub precise_bn_s: f64,
    /// Seconds after backward waiting for the gradients' all-reduce (included in `step_s`):
    /// the communication backward did not hide. 0 with one process and in older runs.
    #[serde(default)]
    pub grad_reduce_s: f64,
    /// Shapes captured as CUDA graphs (`run.cuda_graphs`); 0 in older runs.
    #[serde(default)]
    pub cuda_graphs: usize,
}

/// One training shape's share of a [`TimingRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeTiming {
    pub stage: u32,
    pub frames: u64,
    pub crop: u64,
    /// Clips per rank.
    pub batch: u64,
    pub steps: u64,
    pub seconds: f64,
    /// Clips over all ranks.
    pub clips: u64,
    /// The loader's wait for this shape's batches (0 in older runs).
    #[serde(default)]
    pub data_wait_s: f64,
    /// clips x frames x crop^2: what the multigrid paper scales the batch by.
    pub work: f64,
    /// The forward pass's multiply-adds over the clips (absent in older runs).
    pub macs: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub wall_s: f64,
    pub steps: u64,
    pub clips_seen: u64,
    /// The last validation's accuracy; null without one.
    pub top1: Option<f64>,
    pub top5: Option<f64>,
    /// The final test's; null without a test split or when cancelled.
    pub test_top1: Option<f64>,
    pub test_top5: Option<f64>,
    pub map: Option<f64>,
    pub test_map: Option<f64>,
    pub cancelled: bool,
    /// The preemption notice that stopped the run ("SIGTERM"), if any.
    pub preempted: Option<String>,
}

fn one() -> u32 {
    1
}

/// JSON has no NaN: serde_json writes a non-finite number as null, read back as NaN.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Record {
    /// The JSON object written for this record.
    pub fn to_value(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self)
            .map_err(|e| Error::Internal(format!("a metrics record as JSON: {e}")))
    }

    /// The line's `wall_s`: seconds since the run started, for the kinds that have it.
    pub fn wall_s(&self) -> Option<f64> {
        match self {
            Record::Train(r) => Some(r.wall_s),
            Record::Eval(r) => Some(r.wall_s),
            Record::PreciseBn(r) => Some(r.wall_s),
            Record::Summary(r) => Some(r.wall_s),
            Record::Warmup(_) | Record::Timing(_) => None,
        }
    }
}

/// The records of a metrics file, in order. A line that is not a record is an error naming
/// the file and the line, except an unfinished last line (no newline after it: a write cut
/// off when the run was killed), which is left out.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_records(&text, path)
}

/// [`read_records`] of a file's text; `path` names it in errors.
pub fn parse_records(text: &str, path: &Path) -> Result<Vec<Record>> {
    let unfinished = !text.is_empty() && !text.ends_with('\n');
    let count = text.lines().count();
    let mut records = Vec::with_capacity(count);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(r) => records.push(r),
            Err(_) if unfinished && i + 1 == count => {}
            Err(e) => {
                return Err(Error::Data(format!(
                    "{}: line {}: not a metrics record: {e}",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    Ok(records)
}

/// One line as a record; the error names the field that is wrong ("shapes[0].frames: ...").
fn parse_line(line: &str) -> std::result::Result<Record, String> {
    fn fields<T: serde::de::DeserializeOwned>(
        v: &serde_json::Value,
    ) -> std::result::Result<T, String> {
        serde_path_to_error::deserialize(v).map_err(|e| match e.path().to_string() {
            p if p == "." => e.inner().to_string(),
            p => format!("{p}: {}", e.inner()),
        })
    }
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    match v.get("type").and_then(|t| t.as_str()) {
        Some("warmup") => fields(&v).map(Record::Warmup),
        Some("train") => fields(&v).map(Record::Train),
        Some("eval") => fields(&v).map(Record::Eval),
        Some("precise_bn") => fields(&v).map(Record::PreciseBn),
        Some("timing") => fields(&v).map(Record::Timing),
        Some("summary") => fields(&v).map(Record::Summary),
        _ => Err(format!(
            "type must be warmup, train, eval, precise_bn, timing or summary, got {}",
            v.get("type").map_or("nothing".into(), |t| t.to_string())
        )),
    }
}

pub struct Metrics {
    path: PathBuf,
    /// None on ranks other than 0, which log nothing.
    file: Option<std::fs::File>,
    pub last: serde_json::Value,
}

impl Metrics {
    pub fn open(path: &Path) -> Result<Metrics> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Metrics {
            path: path.to_path_buf(),
            file: Some(file),
            last: serde_json::Value::Null,
        })
    }

    /// Keeps the last value but writes nothing: what ranks other than 0 log to.
    pub fn discard() -> Metrics {
        Metrics {
            path: PathBuf::new(),
            file: None,
            last: serde_json::Value::Null,
        }
    }

    /// Appends one line (a [`Record::to_value`]) in a single write, so a killed run leaves
    /// at most its last line unfinished.
    pub fn write(&mut self, v: serde_json::Value) -> Result<()> {
        let Some(file) = &mut self.file else {
            self.last = v;
            return Ok(());
        };
        let line = format!("{v}\n");
        file.write_all(line.as_bytes())
            .and_then(|_| file.flush())
            .map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })?;
        self.last = v;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> Vec<Record> {
        vec![
            Record::Warmup(WarmupRecord {
                shapes: 6,
                seconds: 1.5,
                cudnn_searched: Some(vec![[16, 4, 23, 2]]),
            }),
            Record::Train(TrainRecord {
                step: 3,
                epoch: 1,
                stage: 0,
                shape: [16, 4, 23],
                bn_groups: 2,
                bn_sync_ranks: 1,
                lr: 0.2,
                loss: 3.25,
                clips_per_s: 188.9,
                data_wait_s: 0.0008,
                data_failures: 0,
                wall_s: 0.42,
                clips_seen: 96,
            }),
            Record::Eval(EvalRecord {
                split: "val".into(),
                step: 3,
                epoch: 1,
                top1: 12.5,
                top5: 50.0,
                map: Some(33.0),
                clips: 5,
                wall_s: 0.45,
                clips_seen: 96,
                shape: Some([4, 23]),
                protocol: Some(ValProtocol::Train),
                seconds: Some(0.03),
            }),
            Record::PreciseBn(PreciseBnRecord {
                step: 4,
                shape: [16, 4, 23],
                bn_groups: 2,
                batches: 1,
                failed_clips: 0,
                seconds: 0.015,
                wall_s: 0.44,
            }),
            Record::Timing(TimingRecord {
                shapes: vec![ShapeTiming {
                    stage: 0,
                    frames: 4,
                    crop: 23,
                    batch: 16,
                    steps: 1,
                    seconds: 0.08,
                    clips: 16,
                    data_wait_s: 0.0009,
                    work: 33856.0,
                    macs: Some(361968384.0),
                }],
                step_s: 0.16,
                data_wait_s: 0.004,
                eval_s: 0.03,
                checkpoint_s: 0.14,
                precise_bn_s: 0.015,
                grad_reduce_s: 0.002,
                cuda_graphs: 3,
            }),
            Record::Summary(SummaryRecord {
                wall_s: 0.68,
                steps: 5,
                clips_seen: 112,
                top1: Some(0.0),
                top5: Some(0.0),
                test_top1: None,
                test_top5: None,
                map: None,
                test_map: None,
                cancelled: true,
                preempted: Some("SIGTERM".into()),
            }),
        ]
    }

    #[test]
    fn every_record_round_trips_through_a_metrics_file() {
        let records = examples();
        // serde's own reading agrees with the file reader's.
        for r in &records {
            let line = r.to_value().unwrap().to_string();
            assert_eq!(&serde_json::from_str::<Record>(&line).unwrap(), r);
        }
        let path = std::env::temp_dir().join(format!("mg-metrics-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut m = Metrics::open(&path).unwrap();
        for r in &records {
            m.write(r.to_value().unwrap()).unwrap();
        }
        assert_eq!(read_records(&path).unwrap(), records);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn lines_keep_their_keys() {
        // What the trainer wrote before the record types, byte for byte (serde_json's maps
        // are sorted).
        let line = r#"{"cancelled":true,"clips_seen":112,"map":null,"preempted":null,"steps":5,"test_map":null,"test_top1":null,"test_top5":null,"top1":0.0,"top5":0.0,"type":"summary","wall_s":0.683308033}"#;
        let r: Record = serde_json::from_str(line).unwrap();
        assert_eq!(r.to_value().unwrap().to_string(), line);
        let line = r#"{"clips":5,"clips_seen":96,"epoch":1,"map":null,"protocol":"train","seconds":0.03150652,"shape":[4,23],"split":"val","step":3,"top1":0.0,"top5":0.0,"type":"eval","wall_s":0.458286667}"#;
        let r: Record = serde_json::from_str(line).unwrap();
        assert_eq!(r.to_value().unwrap().to_string(), line);
    }

    #[test]
    fn a_bad_line_is_an_error_naming_the_file_and_line() {
        let path = Path::new("run/metrics.jsonl");
        let good = examples()[0].to_value().unwrap().to_string();
        let text = format!(
            "{good}\n{}\n",
            r#"{"type":"warmup","shapes":"six","seconds":1}"#
        );
        let e = parse_records(&text, path).unwrap_err().to_string();
        assert!(
            e.contains("run/metrics.jsonl: line 2: not a metrics record: shapes: invalid type"),
            "{e}"
        );
        let e = parse_records(&format!("{}\n{good}\n", r#"{"type":"nope"}"#), path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("nope"), "{e}");
        // A last line cut off by a kill is left out; one followed by more lines is not.
        let cut = &good[..good.len() / 2];
        assert_eq!(
            parse_records(&format!("{good}\n{cut}"), path)
                .unwrap()
                .len(),
            1
        );
        assert!(parse_records(&format!("{cut}\n{good}\n"), path).is_err());
    }

    #[test]
    fn older_lines_read_with_defaults() {
        let old = r#"{"type":"timing","shapes":[{"stage":0,"frames":4,"crop":10,"batch":2,"steps":1,"seconds":1.0,"clips":2,"work":200.0}],"step_s":1.0,"data_wait_s":0.0,"eval_s":0.0,"checkpoint_s":0.0,"precise_bn_s":0.0}"#;
        let Record::Timing(t) = serde_json::from_str(old).unwrap() else {
            panic!("not timing")
        };
        assert_eq!((t.shapes[0].macs, t.shapes[0].data_wait_s), (None, 0.0));
        assert_eq!((t.grad_reduce_s, t.cuda_graphs), (0.0, 0));
        let nan = r#"{"type":"train","step":0,"epoch":0,"stage":0,"shape":[1,2,3],"bn_groups":1,"lr":0.1,"loss":null,"clips_per_s":1.0,"data_wait_s":0.0,"data_failures":0,"wall_s":1.0,"clips_seen":1}"#;
        let Record::Train(t) = serde_json::from_str(nan).unwrap() else {
            panic!("not train")
        };
        assert!(t.loss.is_nan() && t.bn_sync_ranks == 1);
    }
}
