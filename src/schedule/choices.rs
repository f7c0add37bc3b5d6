//! The config's named choices: each a Rust enum read from and written as the string the JSON
//! has always held, parsed once when the config is read. A value outside the list is an error
//! that names the key (serde's path) and the value, and lists what is allowed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `"a"`, `"a or b"`, `"a, b or c"`.
fn listing(texts: &[&str]) -> String {
    match texts {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// serde through the type's `FromStr` and `Display`: the JSON holds the string.
macro_rules! through_strings {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<$name, String> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.to_string()
            }
        }
    };
}

/// An enum of fixed strings: `Display`, `FromStr` (the error lists the choices) and serde
/// through those strings.
macro_rules! choice {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every choice, in the order the docs list them.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The string the config holds.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<$name, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "must be {}, got {other:?}",
                        listing(&[$($text),+])
                    )),
                }
            }
        }

        through_strings!($name);
    };
}

choice! {
    /// `run.val_protocol`: how mid-run validation samples each clip.
    ValProtocol {
        /// PySlowFast's: one clip per video drawn as in training, at the stage's shape.
        Train = "train",
        /// The centred clip at `data.num_frames` and the test crop, the same view every epoch.
        Centre = "centre",
    }
}

choice! {
    /// `run.precision`: mixed precision.
    PrecisionChoice {
        /// bf16 autocast on CUDA, fp32 on the CPU.
        Auto = "auto",
        Fp32 = "fp32",
        /// bf16 autocast.
        Bf16 = "bf16",
        /// fp16 autocast with a dynamic loss scaler.
        Fp16 = "fp16",
    }
}

choice! {
    /// `run.memory_format`: the layout of activations and convolution weights.
    MemoryFormat {
        /// NCDHW, PyTorch's default.
        Contiguous = "contiguous",
        /// NDHWC, as `model.to(memory_format=torch.channels_last_3d)`.
        ChannelsLast3d = "channels_last_3d",
    }
}

choice! {
    /// `run.dist_backend`: the collective engine of a data-parallel run.
    DistBackend {
        /// NCCL for CUDA ranks, MPI for CPU ranks.
        Auto = "auto",
        Nccl = "nccl",
        Mpi = "mpi",
    }
}

choice! {
    /// `model.loss_func`: PySlowFast's MODEL.LOSS_FUNC.
    LossFunc {
        /// Cross-entropy over class indices.
        CrossEntropy = "cross_entropy",
        /// Binary cross-entropy on the logits over multi-hot targets (multi-label tasks).
        BceLogit = "bce_logit",
    }
}

choice! {
    /// `model.head_act`: PySlowFast's MODEL.HEAD_ACT, applied to the logits at evaluation.
    HeadAct {
        Softmax = "softmax",
        /// Independent per-class scores (multi-label tasks).
        Sigmoid = "sigmoid",
    }
}

choice! {
    /// `model.arch`: PySlowFast's MODEL.ARCH, the network family.
    #[derive(Default)]
    Arch {
        /// Two pathways with lateral connections (MODEL_NAME SlowFast).
        #[default]
        SlowFast = "slowfast",
        /// One pathway, 2D kernels in time, a temporal max pool after res2 (MODEL_NAME ResNet).
        C2d = "c2d",
        /// One pathway, inflated 3D kernels, a temporal max pool after res2.
        I3d = "i3d",
        /// SlowFast's slow pathway alone: temporal kernels in res4 and res5 only.
        Slow = "slow",
    }
}

choice! {
    /// `model.nonlocal_instantiation`: PySlowFast's NONLOCAL.INSTANTIATION, how a non-local
    /// block normalises its affinities.
    #[derive(Default)]
    NonlocalInstantiation {
        /// Divided by the number of positions compared (PySlowFast's default).
        #[default]
        DotProduct = "dot_product",
        /// Scaled by 1 / sqrt(inner channels), then a softmax over the positions.
        Softmax = "softmax",
    }
}

choice! {
    /// `data.ensemble_method`: how the test views of a clip combine.
    EnsembleMethod {
        /// The sum of the views' scores.
        Sum = "sum",
        /// Their element-wise maximum (PySlowFast's Charades configs).
        Max = "max",
    }
}

choice! {
    /// `train.dataset`: PySlowFast's TRAIN.DATASET, how `run.data_dir` is read.
    DatasetKind {
        /// A `path label` video list, a clip store or a frame store per split.
        Kinetics = "kinetics",
        /// Frame lists with per-frame label sets (multi-label).
        Charades = "charades",
        /// Frame lists and the label JSON files; one frame per segment.
        Ssv2 = "ssv2",
    }
}

/// `run.device`: `auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    Auto,
    Cpu,
    /// `cuda` (None, the first device) or `cuda:N`.
    Cuda(Option<usize>),
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(None) => f.write_str("cuda"),
            DeviceChoice::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<DeviceChoice, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(None)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(|n| DeviceChoice::Cuda(Some(n)))
                .ok_or_else(|| format!("must be auto, cpu, cuda or cuda:N, got {other:?}")),
        }
    }
}

through_strings!(DeviceChoice);

/// `run.dist_init_method`: where NCCL ranks meet, as `torch.distributed.init_process_group`'s
/// init methods.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum InitMethod {
    /// `env://`: MASTER_ADDR and MASTER_PORT, as torchrun sets them.
    Env,
    /// `tcp://HOST:PORT`: a TCPStore there, served by rank 0.
    Tcp { host: String, port: u16 },
    /// `file:///PATH`: a FileStore on a file system every rank sees.
    File(String),
}

impl fmt::Display for InitMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitMethod::Env => f.write_str("env://"),
            InitMethod::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            InitMethod::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            InitMethod::File(path) => write!(f, "file://{path}"),
        }
    }
}

impl std::str::FromStr for InitMethod {
    type Err = String;
    fn from_str(init: &str) -> Result<InitMethod, String> {
        let bad = |why: &str| {
            format!("must be env://, tcp://HOST:PORT or file:///PATH, got {init:?} ({why})")
        };
        if init == "env://" || init.is_empty() {
            return Ok(InitMethod::Env);
        }
        if let Some(rest) = init.strip_prefix("tcp://") {
            // torch ignores a query (`?rank=0`) and a path after the address.
            let rest = rest.split(['?', '/']).next().unwrap_or("");
            let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(bad("no host"));
            }
            let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
            if port == 0 {
                return Err(bad("port 0"));
            }
            return Ok(InitMethod::Tcp {
                host: host.to_string(),
                port,
            });
        }
        if let Some(path) = init.strip_prefix("file://") {
            let path = path.split('?').next().unwrap_or("");
            if path.is_empty() {
                return Err(bad("no path"));
            }
            return Ok(InitMethod::File(path.to_string()));
        }
        Err(bad("unknown scheme"))
    }
}

through_strings!(InitMethod);

/// `run.cudnn_benchmark`: `true` (cudnn.benchmark: autotune every shape's convolutions),
/// `false` (cuDNN's heuristics), or `"auto"`: per shape, whether autotuning repays itself over
/// the steps the plan holds at that shape (measured at warm-up; see `train::cudnn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
pub enum CudnnBenchmark {
    On,
    Off,
    Auto,
}

impl TryFrom<serde_json::Value> for CudnnBenchmark {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<CudnnBenchmark, String> {
        match v {
            serde_json::Value::Bool(true) => Ok(CudnnBenchmark::On),
            serde_json::Value::Bool(false) => Ok(CudnnBenchmark::Off),
            serde_json::Value::String(s) if s == "auto" => Ok(CudnnBenchmark::Auto),
            other => Err(format!("must be true, false or \"auto\", got {other}")),
        }
    }
}

impl From<CudnnBenchmark> for serde_json::Value {
    fn from(v: CudnnBenchmark) -> serde_json::Value {
        match v {
            CudnnBenchmark::On => true.into(),
            CudnnBenchmark::Off => false.into(),
            CudnnBenchmark::Auto => "auto".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_read_and_write_their_strings() {
        for p in PrecisionChoice::ALL {
            assert_eq!(p.as_str().parse::<PrecisionChoice>().unwrap(), *p);
            let json = serde_json::to_string(p).unwrap();
            assert_eq!(serde_json::from_str::<PrecisionChoice>(&json).unwrap(), *p);
        }
        assert_eq!(
            "fp8".parse::<PrecisionChoice>().unwrap_err(),
            "must be auto, fp32, bf16 or fp16, got \"fp8\""
        );
        assert_eq!(MemoryFormat::ChannelsLast3d.to_string(), "channels_last_3d");
        assert_eq!(
            "tanh".parse::<HeadAct>().unwrap_err(),
            "must be softmax or sigmoid, got \"tanh\""
        );
    }

    #[test]
    fn devices_and_init_methods_round_trip() {
        for s in ["auto", "cpu", "cuda", "cuda:3"] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap().to_string(), s);
        }
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!("gpu".parse::<DeviceChoice>().is_err());
        for s in [
            "env://",
            "tcp://10.0.0.1:29500",
            "tcp://[::1]:29500",
            "file:///tmp/x",
        ] {
            assert_eq!(s.parse::<InitMethod>().unwrap().to_string(), s);
        }
        assert_eq!(
            "tcp://h:29500/?rank=0".parse::<InitMethod>().unwrap(),
            InitMethod::Tcp {
                host: "h".into(),
                port: 29500
            }
        );
        for (bad, why) in [
            ("tcp://h", "no port"),
            ("tcp://:1", "no host"),
            ("tcp://h:0", "port 0"),
            ("tcp://h:x", "not a number"),
            ("file://", "no path"),
            ("udp://h:1", "unknown scheme"),
        ] {
            let e = bad.parse::<InitMethod>().unwrap_err();
            assert!(e.contains(why) && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn cudnn_benchmark_is_a_bool_or_auto() {
        for (json, want) in [
            ("true", CudnnBenchmark::On),
            ("false", CudnnBenchmark::Off),
            ("\"auto\"", CudnnBenchmark::Auto),
        ] {
            let v: CudnnBenchmark = serde_json::from_str(json).unwrap();
            assert_eq!(v, want);
            assert_eq!(serde_json::to_string(&v).unwrap(), json);
        }
        let e = serde_json::from_str::<CudnnBenchmark>("\"yes\"").unwrap_err();
        assert!(
            e.to_string()
                .contains("must be true, false or \"auto\", got \"yes\""),
            "{e}"
        );
    }
}
