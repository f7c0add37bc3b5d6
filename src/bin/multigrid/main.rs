//! The `multigrid` command line: the clap schema of every subcommand and the dispatch to the
//! module that runs it, each a thin layer over the library.

mod bench;
mod build_info;
mod build_store;
#[cfg(feature = "torch")]
mod chart;
#[cfg(feature = "torch")]
mod checkpoint;
mod config;
#[cfg(feature = "torch")]
mod demo;
#[cfg(feature = "torch")]
mod eval;
mod gen_data;
#[cfg(feature = "torch")]
mod output;
mod plan;
#[cfg(feature = "torch")]
mod plot;
#[cfg(feature = "torch")]
mod spawn;
#[cfg(feature = "torch")]
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use multigrid::data::Task;

#[derive(Parser)]
#[command(
    name = "multigrid",
    version,
    about = "Multigrid training of video models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the multigrid schedule of a config: stages, shapes, LR, short-cycle batches, BN
    /// groups, eval epochs; with --dataset-size, the steps against the baseline's.
    Plan(PlanArgs),
    /// Print the default config (every key with PySlowFast's default) as JSON; with
    /// --from-yaml, the config a PySlowFast YAML (and KEY VALUE options) maps to.
    Config(ConfigArgs),
    /// Write the synthetic action dataset: MP4 videos with train/val/test CSV lists in
    /// PySlowFast's format, and/or clip stores; or, with --dataset charades|ssv2, JPEG frames
    /// with PySlowFast's frame lists (and SSv2's JSON files).
    GenData(GenDataArgs),
    /// Store a split in one memory-mapped file: the video list DIR/SPLIT.csv (decoded with
    /// FFmpeg) or, when there is none, the clip store DIR/SPLIT.mgstore. `--format raw` writes
    /// decoded frames (SPLIT.mgstore: fastest, about 20x an MP4's size); `--format jpeg` each
    /// frame compressed on its own (SPLIT.mgframes: a clip costs the frames it samples). The
    /// trainer reads SPLIT.mgstore, else SPLIT.mgframes, else SPLIT.csv.
    BuildStore(BuildStoreArgs),
    /// Train the config's network (`model.arch`) with its schedule (multigrid or baseline).
    #[cfg(feature = "torch")]
    Train(TrainArgs),
    /// PySlowFast checkpoints (.pyth) to and from ours; needs Python with torch ($MG_PYTHON,
    /// else python3).
    #[cfg(feature = "torch")]
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Evaluate a checkpoint on the val (centre view) or test (K x 3 views) split.
    #[cfg(feature = "torch")]
    Eval(EvalArgs),
    /// The main job: baseline and multigrid training of the tiny SlowFast on synthetic data,
    /// side by side, with the accuracy-vs-time plot.
    #[cfg(feature = "torch")]
    Demo(DemoArgs),
    /// Accuracy and loss against wall-clock time for run directories, as an SVG.
    #[cfg(feature = "torch")]
    Plot(PlotArgs),
    /// How this build was made, one `key value` line each: version, libtorch, cuda, and
    /// static_libs (what a program linking libmultigrid.a needs after it; used by `make install`).
    BuildInfo,
    /// Benchmarks; each reports a ratio against a reference measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[cfg(feature = "torch")]
#[derive(Subcommand)]
enum CheckpointCommand {
    /// Convert a PySlowFast .pyth (model_state, optimizer_state, epoch, cfg) into a checkpoint
    /// directory of ours: weights by name (a DataParallel "module." prefix and sub-batch BN
    /// names are converted), SGD momentum when the optimizer's parameter groups match
    /// construct_optimizer's, and a manifest that resumes at the epoch after `epoch`. The
    /// weights must fit --config's model exactly. Written to a temporary directory renamed
    /// into place.
    Import(ImportArgs),
    /// Write a checkpoint of ours (a checkpoint directory, or a run directory for its newest)
    /// as a .pyth that PySlowFast's load_checkpoint accepts: model_state with
    /// num_batches_tracked for every BN, optimizer_state in torch.optim.SGD's form and
    /// construct_optimizer's parameter order, epoch, cfg (YAML), scaler_state with fp16.
    /// Written to a temporary file renamed into place.
    Export(ExportArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Clips/s of the fused collator at the Kinetics shapes against PyTorch in Python, and the
    /// output rate against memcpy.
    Collate(CollateArgs),
    /// Seconds per training step of our SlowFast against the same model trained by PyTorch in
    /// Python (same libtorch), at two shapes; the ratio should be at most 1.
    #[cfg(feature = "torch")]
    Step(StepArgs),
    /// Our SGD against torch.optim.SGD on a device: equality over 20 updates of a tiny
    /// SlowFast (PASS/FAIL within 1e-6), then one update of SlowFast R50's parameters timed for
    /// both. Multi-tensor kernels (foreach=True), or with --fused the fused kernel (CUDA).
    #[cfg(feature = "torch")]
    Sgd(SgdArgs),
    /// The paper's comparison on synthetic video: baseline and multigrid, each for its full
    /// schedule and several seeds; final accuracy, whole-run and time-to-accuracy ratios, where
    /// the time goes by shape, and the task's criteria (runs/speedup/speedup.json, the chart as
    /// SVG and PNG).
    #[cfg(feature = "torch")]
    Speedup(SpeedupArgs),
    /// Data-parallel costs on this machine: all-reduce bus bandwidth against memcpy, one R50
    /// gradient against an R50 step, and training clips/s as 1 rank against N ranks.
    #[cfg(feature = "torch")]
    Dist(DistArgs),
    /// Loader throughput (clips/s) from each source of the same clips that DATA holds (the
    /// video list SPLIT.csv, the clip store SPLIT.mgstore, the frame store SPLIT.mgframes):
    /// following a plan's first steps, or with --per-shape one core's clips/s at each of the
    /// plan's shapes, the bytes per hour of video, and the cores a GPU needs.
    Loader(LoaderArgs),
    /// Scaling on paper: step time, scaling efficiency and whole-run hours of the recipe,
    /// baseline against multigrid, at several GPU counts, projected from per-shape step times
    /// measured on one GPU, the model's gradient in DDP buckets and link bandwidths (NVLink
    /// inside a node; InfiniBand and Ethernet between nodes), fp32 or bf16 gradients, with and
    /// without overlap of all-reduce with backward.
    #[cfg(feature = "torch")]
    Scale(bench::scale::Args),
}

#[derive(Args)]
struct PlanArgs {
    #[arg(long)]
    config: std::path::PathBuf,
    /// Training clips; adds steps per stage and the total against the baseline.
    #[arg(long)]
    dataset_size: Option<u64>,
    /// Ranks (GPUs) the global batch is split over.
    #[arg(long, default_value_t = 1)]
    world_size: u32,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ConfigArgs {
    /// A PySlowFast YAML config (with its _BASE_ files), as tools/run_net.py --cfg reads it.
    #[arg(long, value_name = "YAML")]
    from_yaml: Option<PathBuf>,
    /// PySlowFast's trailing KEY VALUE options over the YAML (TRAIN.BATCH_SIZE 64 ...).
    #[arg(requires = "from_yaml", value_name = "KEY VALUE")]
    opts: Vec<String>,
}

#[derive(Args)]
struct GenDataArgs {
    #[arg(long)]
    out: PathBuf,
    /// Layout to write: kinetics (MP4 videos and/or clip stores), charades (multi-label
    /// frame lists) or ssv2 (frame lists and SSv2's JSON files).
    #[arg(long, value_enum, default_value_t = gen_data::GenDataset::Kinetics)]
    dataset: gen_data::GenDataset,
    /// Clips (videos for charades and ssv2).
    #[arg(long, default_value_t = 1000)]
    clips: u64,
    /// Frames per clip (the mean video length for charades and ssv2).
    #[arg(long, default_value_t = 64)]
    frames: u32,
    /// Frame side in pixels (even).
    #[arg(long, default_value_t = 128)]
    size: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Share of clips in val, and again in test (charades and ssv2: in val, which serves
    /// as test too).
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Also write {train,val,test}.mgstore clip stores (kinetics only).
    #[arg(long)]
    store: bool,
    /// Skip the MP4 files (with --store; kinetics only).
    #[arg(long)]
    no_videos: bool,
    /// Frame rate of the MP4 files and stores, 30 unless given (kinetics only).
    #[arg(long)]
    fps: Option<u32>,
    /// The synthetic task (kinetics only): simple (12 classes, the demo's) or hard (24
    /// classes of ordered motions at two speeds among distractors, the speedup
    /// benchmark's). Default simple.
    #[arg(long, value_parser = gen_data::task_parser())]
    task: Option<Task>,
}

#[derive(Args)]
struct BuildStoreArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "train")]
    split: String,
    #[arg(long)]
    out: PathBuf,
    /// Downscale so the short side is this many pixels (PySlowFast's Kinetics copies are
    /// 256 or 320).
    #[arg(long)]
    short_side: Option<u32>,
    #[arg(long, value_enum, default_value_t = build_store::StoreFormat::Raw)]
    format: build_store::StoreFormat,
    /// JPEG quality, 1-100 (--format jpeg).
    #[arg(long, default_value_t = multigrid::data::frame_store::DEFAULT_QUALITY)]
    quality: u8,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct TrainArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    output_dir: PathBuf,
    /// Continue from the newest checkpoint in the output directory (plan position,
    /// optimizer and all). With --init-from, a checkpoint found here wins, as PySlowFast's
    /// TRAIN.AUTO_RESUME does: a fine-tuning run that was stopped resumes where it was
    /// rather than starting over from CHECKPOINT.
    #[arg(long)]
    resume: bool,
    /// Fine-tune: start from CHECKPOINT's weights (a checkpoint or run directory of ours,
    /// a PySlowFast .pyth, a PySlowFast Caffe2 .pkl, or a 2D ImageNet ResNet with
    /// torchvision's names as .pth or .safetensors, inflated to 3D; .pyth, .pkl and .pth
    /// need Python with torch: $MG_PYTHON, else python3) at step 0 with a fresh optimizer.
    /// When the class count differs the classifier (head.projection.*) is re-initialised;
    /// any other tensor that is missing or of another shape is an error (see
    /// --init-skip-missing). Without --resume the run starts from CHECKPOINT even if the
    /// output directory holds checkpoints.
    #[arg(long, value_name = "CHECKPOINT")]
    init_from: Option<PathBuf>,
    /// With --init-from: load what maps and list the rest, which keeps its initial values
    /// (a 2D ResNet has no fast pathway, lateral connections or head), rather than fail.
    #[arg(long)]
    init_skip_missing: bool,
    #[command(flatten)]
    overrides: Overrides,
    /// Start this many ranks on this machine and train one model data-parallel: one per
    /// GPU (torchrun's environment, NCCL) or, on the CPU, through mpirun (MPI), the cores
    /// split between them. Under torchrun, srun or mpirun, leave it out.
    #[arg(long, value_name = "N")]
    nproc_per_node: Option<usize>,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct EvalArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long, default_value = "val")]
    split: String,
    #[command(flatten)]
    overrides: Overrides,
}

// Command-line changes to a config file, applied in order: `--device`, `--data` and any
// number of `--set SECTION.KEY=VALUE` (PySlowFast's trailing `SOLVER.BASE_LR 0.1` opts; keys
// are case-insensitive, VALUE is JSON or else a string). `demo` and `bench speedup` give
// their own `--data` as the data directory.
#[cfg(feature = "torch")]
#[derive(Args, Debug, Clone, Default)]
struct Overrides {
    /// auto, cpu, cuda, cuda:N (overrides run.device).
    #[arg(long)]
    device: Option<String>,
    /// Data directory (overrides run.data_dir).
    #[arg(long)]
    data: Option<PathBuf>,
    /// SECTION.KEY=VALUE, repeatable: `--set solver.base_lr=0.2 --set run.precision=fp16`.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// With a PySlowFast YAML --config: its KEY VALUE options, as tools/run_net.py takes
    /// them (`MULTIGRID.LONG_CYCLE True TRAIN.BATCH_SIZE 64`), applied before --set.
    #[arg(value_name = "KEY VALUE")]
    opts: Vec<String>,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct DemoArgs {
    #[arg(long, default_value = "data/synthetic_demo")]
    data: PathBuf,
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    #[arg(long)]
    device: Option<String>,
    /// SECTION.KEY=VALUE applied to both runs.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct PlotArgs {
    runs: Vec<PathBuf>,
    #[arg(long, default_value = "accuracy_vs_time.svg")]
    out: PathBuf,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct ImportArgs {
    /// The .pyth file.
    input: PathBuf,
    /// The checkpoint directory to create (absent or empty). To resume a PySlowFast run,
    /// import into RUN/checkpoints/step_000000000 and train with --output-dir RUN --resume.
    out_dir: PathBuf,
    /// Our config for the model the checkpoint holds (stored in the manifest).
    #[arg(long)]
    config: PathBuf,
    /// Let torch.load unpickle arbitrary Python objects, which runs code stored in the
    /// file: only for files you trust (old checkpoints can need it).
    #[arg(long)]
    trust_pickle: bool,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct ExportArgs {
    ckpt_dir: PathBuf,
    /// The .pyth file to write, or a PySlowFast OUTPUT_DIR: then
    /// checkpoints/checkpoint_epoch_NNNNN.pyth in it, PySlowFast's name, where its
    /// TRAIN.AUTO_RESUME finds the file.
    output: PathBuf,
}

#[derive(Args)]
struct CollateArgs {
    /// Clips per batch.
    #[arg(long, default_value_t = 8)]
    clips: usize,
    /// Threads for both (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Minimum seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// A python with torch (the set-up's .venv by default).
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    #[arg(long, default_value = "scripts/collate_reference.py")]
    script: PathBuf,
    /// Where the benchmark's input frames are written.
    #[arg(long, default_value = "target/bench")]
    work_dir: PathBuf,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct StepArgs {
    #[arg(long, default_value_t = 18)]
    depth: u32,
    #[arg(long, default_value_t = 8)]
    width: u32,
    /// Shapes as BATCHxFRAMESxCROP.
    #[arg(long, value_delimiter = ',', default_value = "16x16x48,64x8x32")]
    shapes: Vec<String>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[arg(long)]
    autocast: bool,
    /// Memory formats to time, each against PyTorch in the same format: contiguous,
    /// channels_last_3d (run.memory_format), or both separated by a comma.
    #[arg(long, value_delimiter = ',', default_value = "contiguous")]
    memory_format: Vec<String>,
    /// A python with torch for the reference; "none" to skip it.
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    /// Also time the step captured as a CUDA graph and replayed (run.cuda_graphs); CUDA only.
    #[arg(long)]
    cuda_graphs: bool,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct SgdArgs {
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    fused: bool,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    #[arg(long, default_value = "runs/bench-sgd")]
    out: PathBuf,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct SpeedupArgs {
    /// The synthetic task: hard (24 classes that keep improving over the schedule,
    /// configs/synthetic_hard_slowfast_small*.json) or simple (12 classes that saturate,
    /// configs/synthetic_slowfast_small*.json).
    #[arg(long, value_parser = gen_data::task_parser(), default_value_t = Task::Hard)]
    task: Task,
    /// Training seeds per schedule.
    #[arg(long, default_value_t = 3)]
    seeds: u32,
    /// A first look: the tiny configs' shorter schedules on the data given.
    #[arg(long)]
    quick: bool,
    /// Where the task's clip stores are (generated when missing or of another size or
    /// task); default data/synthetic_hard or data/synthetic_speedup by task.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Clips generated when the data directory is empty.
    #[arg(long, default_value_t = 4000)]
    clips: u32,
    #[arg(long, default_value = "runs/speedup")]
    out: PathBuf,
    #[arg(long)]
    device: Option<String>,
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Only analyse the runs already under --out.
    #[arg(long)]
    report_only: bool,
}

#[cfg(feature = "torch")]
#[derive(Args)]
struct DistArgs {
    #[arg(long, default_value_t = 2)]
    ranks: usize,
    #[arg(long, default_value = "runs/bench-dist")]
    out: PathBuf,
    /// The training comparison's config (trained for one epoch) and data (generated when
    /// missing).
    #[arg(long, default_value = "configs/synthetic_slowfast_tiny.json")]
    config: PathBuf,
    #[arg(long, default_value = "data/synthetic_demo")]
    data: PathBuf,
    /// One rank of the bandwidth measurement (started by mpirun).
    #[arg(long, hide = true)]
    worker: bool,
}

#[derive(Args)]
struct LoaderArgs {
    #[arg(long)]
    config: PathBuf,
    /// Directory with SPLIT.csv, SPLIT.mgstore and/or SPLIT.mgframes.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "train")]
    split: String,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value_t = 20)]
    steps: u64,
    /// SECTION.KEY=VALUE, repeatable: `--set train.batch_size=8` for one GPU's batches.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// One core's clips/s at every distinct (batch, frames, crop) of the plan.
    #[arg(long)]
    per_shape: bool,
    /// With --per-shape: clips timed per shape and source.
    #[arg(long, default_value_t = 48)]
    clips_per_shape: usize,
    /// With --per-shape: a GPU's seconds per training step, for the cores each source
    /// needs to keep up (default: 0.066, SlowFast R50 8x8 bf16 channels-last on one H200,
    /// ../shared/guides/gpu.md).
    #[arg(long, default_value_t = 0.066)]
    gpu_step_s: f64,
}

fn main() -> ExitCode {
    // Piping into `head` should end the program quietly, as for any Unix tool, not panic.
    // SAFETY: resetting a signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A panic on one rank must end the job, not leave the others waiting in a collective.
    #[cfg(feature = "torch")]
    {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            report(info);
            multigrid::distributed::abort_job(101);
        }));
    }
    match run(Cli::parse().command) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        #[cfg(feature = "torch")]
        Ok(Outcome::Preempted) => ExitCode::from(multigrid::distributed::signals::EXIT_PREEMPTED),
        Err(msg) => {
            eprintln!("multigrid: {msg}");
            // A rank that fails must not leave its peers waiting in a collective.
            #[cfg(feature = "torch")]
            multigrid::distributed::abort_job(1);
            ExitCode::FAILURE
        }
    }
}

/// How a command that succeeded ended.
enum Outcome {
    Done,
    /// Training stopped for a preemption notice, after its checkpoint.
    #[cfg(feature = "torch")]
    Preempted,
}

fn run(command: Command) -> Result<Outcome, String> {
    let done = |r: Result<(), String>| r.map(|()| Outcome::Done);
    match command {
        Command::Plan(a) => done(plan::run(&a)),
        Command::Config(a) => done(config::run(&a)),
        Command::GenData(a) => done(gen_data::run(&a)),
        Command::BuildStore(a) => done(build_store::run(&a)),
        #[cfg(feature = "torch")]
        Command::Train(a) => train::run(&a),
        #[cfg(feature = "torch")]
        Command::Checkpoint(c) => done(checkpoint::run(&c)),
        #[cfg(feature = "torch")]
        Command::Eval(a) => done(eval::run(&a)),
        #[cfg(feature = "torch")]
        Command::Demo(a) => done(demo::run(&a)),
        #[cfg(feature = "torch")]
        Command::Plot(a) => done(plot::run(&a)),
        Command::BuildInfo => done(build_info::run()),
        Command::Bench(b) => done(bench::run(&b)),
    }
}
