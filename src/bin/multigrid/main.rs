//! The `multigrid` command line: schedule and plan inspection (more subcommands join with the
//! data pipeline and the trainer).

mod bench;
#[cfg(feature = "torch")]
mod bench_dist;
#[cfg(feature = "torch")]
mod bench_scale;
#[cfg(feature = "torch")]
mod chart;
#[cfg(feature = "torch")]
mod checkpoint;
mod data;
mod plan;
#[cfg(feature = "torch")]
mod spawn;
#[cfg(feature = "torch")]
mod speedup;
#[cfg(feature = "torch")]
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use multigrid::Config;

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
    Plan {
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
    },
    /// Print the default config (every key with PySlowFast's default) as JSON.
    Config,
    /// Write the synthetic action dataset: MP4 videos with train/val/test CSV lists in
    /// PySlowFast's format, and/or clip stores; or, with --dataset charades|ssv2, JPEG frames
    /// with PySlowFast's frame lists (and SSv2's JSON files).
    GenData {
        #[arg(long)]
        out: PathBuf,
        /// Layout to write: kinetics (MP4 videos and/or clip stores), charades (multi-label
        /// frame lists) or ssv2 (frame lists and SSv2's JSON files).
        #[arg(long, value_enum, default_value_t = data::GenDataset::Kinetics)]
        dataset: data::GenDataset,
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
        #[arg(long, value_enum)]
        task: Option<data::Task>,
    },
    /// Store a split in one memory-mapped file: the video list DIR/SPLIT.csv (decoded with
    /// FFmpeg) or, when there is none, the clip store DIR/SPLIT.mgstore. `--format raw` writes
    /// decoded frames (SPLIT.mgstore: fastest, about 20x an MP4's size); `--format jpeg` each
    /// frame compressed on its own (SPLIT.mgframes: a clip costs the frames it samples). The
    /// trainer reads SPLIT.mgstore, else SPLIT.mgframes, else SPLIT.csv.
    BuildStore {
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
        #[arg(long, value_enum, default_value_t = data::StoreFormat::Raw)]
        format: data::StoreFormat,
        /// JPEG quality, 1-100 (--format jpeg).
        #[arg(long, default_value_t = multigrid::data::frame_store::DEFAULT_QUALITY)]
        quality: u8,
    },
    /// Train a SlowFast with the config's schedule (multigrid or baseline).
    #[cfg(feature = "torch")]
    Train {
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
        /// or a PySlowFast .pyth, which needs Python with torch: $MG_PYTHON, else python3) at
        /// step 0 with a fresh optimizer. When the class count differs the classifier
        /// (head.projection.*) is re-initialised; any other tensor that is missing or of
        /// another shape is an error. Without --resume the run starts from CHECKPOINT even if
        /// the output directory holds checkpoints.
        #[arg(long, value_name = "CHECKPOINT")]
        init_from: Option<PathBuf>,
        /// auto, cpu, cuda, cuda:N (overrides run.device).
        #[arg(long)]
        device: Option<String>,
        /// Data directory (overrides run.data_dir).
        #[arg(long)]
        data: Option<PathBuf>,
        /// SECTION.KEY=VALUE, repeatable: `--set solver.base_lr=0.2 --set run.precision=fp16`.
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
        /// Start this many ranks on this machine and train one model data-parallel: one per
        /// GPU (torchrun's environment, NCCL) or, on the CPU, through mpirun (MPI), the cores
        /// split between them. Under torchrun, srun or mpirun, leave it out.
        #[arg(long, value_name = "N")]
        nproc_per_node: Option<usize>,
    },
    /// PySlowFast checkpoints (.pyth) to and from ours; needs Python with torch ($MG_PYTHON,
    /// else python3).
    #[cfg(feature = "torch")]
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Evaluate a checkpoint on the val (centre view) or test (K x 3 views) split.
    #[cfg(feature = "torch")]
    Eval {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, default_value = "val")]
        split: String,
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
    },
    /// The main job: baseline and multigrid training of the tiny SlowFast on synthetic data,
    /// side by side, with the accuracy-vs-time plot.
    #[cfg(feature = "torch")]
    Demo {
        #[arg(long, default_value = "data/synthetic_demo")]
        data: PathBuf,
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        #[arg(long)]
        device: Option<String>,
        /// SECTION.KEY=VALUE applied to both runs.
        #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
        set: Vec<String>,
    },
    /// Accuracy and loss against wall-clock time for run directories, as an SVG.
    #[cfg(feature = "torch")]
    Plot {
        runs: Vec<PathBuf>,
        #[arg(long, default_value = "accuracy_vs_time.svg")]
        out: PathBuf,
    },
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
    Import {
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
    },
    /// Write a checkpoint of ours (a checkpoint directory, or a run directory for its newest)
    /// as a .pyth that PySlowFast's load_checkpoint accepts: model_state with
    /// num_batches_tracked for every BN, optimizer_state in torch.optim.SGD's form and
    /// construct_optimizer's parameter order, epoch, cfg (YAML), scaler_state with fp16.
    /// Written to a temporary file renamed into place.
    Export {
        ckpt_dir: PathBuf,
        /// The .pyth file to write.
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Clips/s of the fused collator at the Kinetics shapes against PyTorch in Python, and the
    /// output rate against memcpy.
    Collate {
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
    },
    /// Seconds per training step of our SlowFast against the same model trained by PyTorch in
    /// Python (same libtorch), at two shapes; the ratio should be at most 1.
    #[cfg(feature = "torch")]
    Step {
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
    },
    /// Our SGD against torch.optim.SGD on a device: equality over 20 updates of a tiny
    /// SlowFast (PASS/FAIL within 1e-6), then one update of SlowFast R50's parameters timed for
    /// both. Multi-tensor kernels (foreach=True), or with --fused the fused kernel (CUDA).
    #[cfg(feature = "torch")]
    Sgd {
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
    },
    /// The paper's comparison on synthetic video: baseline and multigrid, each for its full
    /// schedule and several seeds; final accuracy, whole-run and time-to-accuracy ratios, where
    /// the time goes by shape, and the task's criteria (runs/speedup/speedup.json, the chart as
    /// SVG and PNG).
    #[cfg(feature = "torch")]
    Speedup {
        /// The synthetic task: hard (24 classes that keep improving over the schedule,
        /// configs/synthetic_hard_slowfast_small*.json) or simple (12 classes that saturate,
        /// configs/synthetic_slowfast_small*.json).
        #[arg(long, value_enum, default_value_t = data::Task::Hard)]
        task: data::Task,
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
    },
    /// Data-parallel costs on this machine: all-reduce bus bandwidth against memcpy, one R50
    /// gradient against an R50 step, and training clips/s as 1 rank against N ranks.
    #[cfg(feature = "torch")]
    Dist {
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
    },
    /// Loader throughput (clips/s) from each source of the same clips that DATA holds (the
    /// video list SPLIT.csv, the clip store SPLIT.mgstore, the frame store SPLIT.mgframes):
    /// following a plan's first steps, or with --per-shape one core's clips/s at each of the
    /// plan's shapes, the bytes per hour of video, and the cores a GPU needs.
    Loader {
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
    },
    /// Scaling on paper: step time, scaling efficiency and whole-run hours of the recipe,
    /// baseline against multigrid, at several GPU counts, projected from per-shape step times
    /// measured on one GPU, the model's gradient in DDP buckets and link bandwidths (NVLink
    /// inside a node; InfiniBand and Ethernet between nodes), fp32 or bf16 gradients, with and
    /// without overlap of all-reduce with backward.
    #[cfg(feature = "torch")]
    Scale(bench_scale::Args),
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
    let cli = Cli::parse();
    // Set when training stopped for a preemption notice, after its checkpoint (training needs
    // libtorch).
    #[cfg_attr(not(feature = "torch"), allow(unused_mut, unused_variables))]
    let mut preempted = false;
    let result = match cli.command {
        Command::Plan {
            config,
            dataset_size,
            world_size,
            json,
        } => plan::cmd_plan(&config, dataset_size, world_size, json),
        Command::BuildInfo => {
            println!("version {}", env!("CARGO_PKG_VERSION"));
            println!("libtorch {}", env!("MG_LIBTORCH_VERSION"));
            println!("cuda {}", env!("MG_CUDA_TEXT"));
            println!("nccl {}", env!("MG_NCCL_TEXT"));
            println!(
                "mpi {}",
                if cfg!(feature = "mpi") {
                    "linked"
                } else {
                    "not built"
                }
            );
            println!("static_libs {}", env!("MG_STATIC_LIBS"));
            Ok(())
        }
        Command::Bench(BenchCommand::Collate {
            clips,
            threads,
            seconds,
            python,
            script,
            work_dir,
        }) => {
            let threads = if threads == 0 {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                threads
            };
            bench::collate_bench(&bench::Options {
                clips,
                threads,
                seconds,
                python: &python,
                script: &script,
                work_dir: &work_dir,
            })
        }
        #[cfg(feature = "torch")]
        Command::Bench(BenchCommand::Step {
            depth,
            width,
            shapes,
            device,
            steps,
            autocast,
            memory_format,
            python,
        }) => {
            let parsed: Result<Vec<(i64, i64, i64)>, String> = shapes
                .iter()
                .map(|s| {
                    let v: Vec<i64> = s.split('x').filter_map(|p| p.parse().ok()).collect();
                    match v[..] {
                        [n, t, c] if n > 0 && t > 0 && c > 0 => Ok((n, t, c)),
                        _ => Err(format!("shape {s:?} is not BATCHxFRAMESxCROP")),
                    }
                })
                .collect();
            parsed.and_then(|shapes| {
                bench::step_bench(&bench::StepOptions {
                    depth,
                    width,
                    shapes: &shapes,
                    device: &device,
                    steps,
                    autocast,
                    memory_formats: &memory_format,
                    python: (python.as_os_str() != "none").then_some(python.as_path()),
                })
            })
        }
        #[cfg(feature = "torch")]
        Command::Bench(BenchCommand::Sgd {
            device,
            fused,
            steps,
            python,
            out,
        }) => bench::sgd_bench(&bench::SgdOptions {
            device: &device,
            fused,
            steps,
            python: &python,
            work_dir: &out,
        }),
        #[cfg(feature = "torch")]
        Command::Bench(BenchCommand::Dist {
            ranks,
            out,
            config,
            data,
            worker,
        }) => {
            if worker {
                bench_dist::worker(&out)
            } else {
                train::ensure_data(&data, 3000, data::Task::Simple).and_then(|_| {
                    bench_dist::bench(&bench_dist::Options {
                        ranks,
                        out: &out,
                        config: &config,
                        data: &data,
                    })
                })
            }
        }
        Command::Bench(BenchCommand::Loader {
            config,
            data,
            split,
            workers,
            steps,
            set,
            per_shape,
            clips_per_shape,
            gpu_step_s,
        }) => bench::loader_bench(&bench::LoaderBench {
            config: &config,
            data: &data,
            split: &split,
            workers,
            steps,
            set: &set,
            per_shape: per_shape.then_some((clips_per_shape, gpu_step_s)),
        }),
        #[cfg(feature = "torch")]
        Command::Bench(BenchCommand::Scale(args)) => bench_scale::run(&args),
        #[cfg(feature = "torch")]
        Command::Train {
            config,
            output_dir,
            resume,
            init_from,
            device,
            data,
            set,
            nproc_per_node,
        } => {
            let o = train::Overrides { device, data, set };
            match nproc_per_node {
                Some(n) => train::launch(&config, n, &o).map(|p| preempted = p),
                None => train::train(&config, &output_dir, resume, init_from.as_deref(), &o)
                    .map(|s| preempted = s.preempted.is_some()),
            }
        }
        #[cfg(feature = "torch")]
        Command::Checkpoint(CheckpointCommand::Import {
            input,
            out_dir,
            config,
            trust_pickle,
        }) => checkpoint::import(&input, &out_dir, &config, trust_pickle),
        #[cfg(feature = "torch")]
        Command::Checkpoint(CheckpointCommand::Export { ckpt_dir, output }) => {
            checkpoint::export(&ckpt_dir, &output)
        }
        #[cfg(feature = "torch")]
        Command::Eval {
            config,
            checkpoint,
            split,
            device,
            data,
            set,
        } => train::eval(
            &config,
            &checkpoint,
            &split,
            &train::Overrides { device, data, set },
        ),
        #[cfg(feature = "torch")]
        Command::Demo {
            data,
            out,
            device,
            set,
        } => train::demo(
            &data,
            &out,
            &train::Overrides {
                device,
                data: None,
                set,
            },
        ),
        #[cfg(feature = "torch")]
        Command::Bench(BenchCommand::Speedup {
            task,
            seeds,
            quick,
            data: dir,
            clips,
            out,
            device,
            set,
            report_only,
        }) => speedup::run(&speedup::Options {
            data: dir.unwrap_or_else(|| {
                PathBuf::from(match task {
                    data::Task::Hard => "data/synthetic_hard",
                    data::Task::Simple => "data/synthetic_speedup",
                })
            }),
            clips,
            out,
            task,
            seeds,
            quick,
            report_only,
            overrides: train::Overrides {
                device,
                data: None,
                set,
            },
        }),
        #[cfg(feature = "torch")]
        Command::Plot { runs, out } => train::plot(&runs, &out),
        Command::GenData {
            out,
            dataset,
            clips,
            frames,
            size,
            seed,
            val_fraction,
            store,
            no_videos,
            fps,
            task,
        } => match dataset {
            data::GenDataset::Kinetics => data::gen_data(&data::GenOptions {
                out,
                clips,
                frames,
                size,
                seed,
                val_fraction,
                store,
                videos: !no_videos,
                fps: fps.unwrap_or(30),
                task: task.unwrap_or(data::Task::Simple),
            }),
            _ => data::gen_frame_lists(
                dataset,
                &out,
                &multigrid::data::frame_list_gen::FrameListOptions {
                    videos: clips,
                    frames,
                    size,
                    seed,
                    val_fraction,
                },
                [
                    ("--store", store),
                    ("--no-videos", no_videos),
                    ("--fps", fps.is_some()),
                    ("--task", task.is_some()),
                ],
            ),
        },
        Command::BuildStore {
            data,
            split,
            out,
            short_side,
            format,
            quality,
        } => data::build_store(&data, &split, &out, short_side, format, quality),
        Command::Config => serde_json::to_string_pretty(&Config::default())
            .map(|s| println!("{s}"))
            .map_err(|e| e.to_string()),
    };
    match result {
        #[cfg(feature = "torch")]
        Ok(()) if preempted => ExitCode::from(multigrid::distributed::signals::EXIT_PREEMPTED),
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("multigrid: {msg}");
            // A rank that fails must not leave its peers waiting in a collective.
            #[cfg(feature = "torch")]
            multigrid::distributed::abort_job(1);
            ExitCode::FAILURE
        }
    }
}
