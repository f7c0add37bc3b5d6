//! c10d's stores through the C++ shim: TCPStore on loopback (port 0, never a fixed port),
//! rendezvous as torchrun sets it up (agent store and plain), and FileStore. CPU only.
#![cfg(feature = "torch")]

use std::thread;
use std::time::{Duration, Instant};

use multigrid::distributed::c10d::{self, Store};
use multigrid::distributed::{DistOptions, Launch};

const LOOPBACK: &str = "127.0.0.1";
const TIMEOUT: Duration = Duration::from_secs(30);

fn options(init_method: &str) -> DistOptions {
    DistOptions {
        init_method: init_method.into(),
        timeout: TIMEOUT,
        ..DistOptions::default()
    }
}

fn rank(rank: usize, world_size: usize, port: u16, agent_store: bool) -> Launch {
    Launch {
        rank,
        world_size,
        local_rank: rank,
        local_world_size: world_size,
        master_addr: Some(LOOPBACK.into()),
        master_port: Some(port),
        agent_store,
        ..Launch::single()
    }
}

/// A port nothing listens on right now (bound, then released): plain torchrun mode needs the
/// port before rank 0's server exists.
fn free_port() -> u16 {
    std::net::TcpListener::bind((LOOPBACK, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_store_round_trip() {
    let server = Store::tcp(LOOPBACK, 0, true, 2, TIMEOUT).unwrap();
    let port = server.port();
    assert_ne!(port, 0);
    server.set("from_server", b"hello").unwrap();
    let client = thread::spawn(move || {
        let c = Store::tcp(LOOPBACK, port, false, 2, TIMEOUT).unwrap();
        assert_eq!(c.port(), port);
        assert_eq!(c.get("from_server").unwrap(), b"hello");
        c.set("from_client", &[0, 1, 2, 255]).unwrap();
        c.set("empty", b"").unwrap();
        c.add("counter", 5).unwrap()
    });
    assert_eq!(server.get("from_client").unwrap(), vec![0, 1, 2, 255]);
    assert_eq!(server.get("empty").unwrap(), Vec::<u8>::new());
    let after_client = client.join().unwrap();
    assert_eq!(after_client, 5);
    assert_eq!(server.add("counter", -2).unwrap(), 3);
    assert_eq!(server.add("fresh", 0).unwrap(), 0);
}

#[test]
fn missing_key_times_out_with_an_error() {
    let store = Store::tcp(LOOPBACK, 0, true, 1, Duration::from_millis(300)).unwrap();
    let start = Instant::now();
    let err = store.get("never_set").unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let msg = err.to_string();
    assert!(
        msg.contains("never_set") || msg.to_lowercase().contains("time"),
        "{msg}"
    );
    // A longer timeout set later applies to later gets.
    store.set_timeout(Duration::from_millis(100)).unwrap();
    assert!(store.get("never_set").is_err());
}

#[test]
fn a_client_without_a_server_port_is_refused() {
    let err = Store::tcp(LOOPBACK, 0, false, 2, TIMEOUT).unwrap_err();
    assert!(
        matches!(err, multigrid::error::Error::InvalidArgument(_)),
        "{err}"
    );
}

#[test]
fn prefixed_stores_keep_keys_apart() {
    let base = Store::tcp(LOOPBACK, 0, true, 1, TIMEOUT).unwrap();
    let a = base.prefixed("a").unwrap();
    let b = base.prefixed("b").unwrap();
    assert_eq!(a.port(), base.port());
    a.set("k", b"1").unwrap();
    b.set("k", b"2").unwrap();
    assert_eq!(a.get("k").unwrap(), b"1");
    assert_eq!(b.get("k").unwrap(), b"2");
    assert_eq!(base.get("a/k").unwrap(), b"1");
}

/// torchrun with TORCHELASTIC_USE_AGENT_STORE=True: the agent serves the store and every rank,
/// rank 0 included, is a client.
#[test]
fn rendezvous_with_torchrun_agent_store() {
    let agent = Store::tcp(LOOPBACK, 0, true, 2, TIMEOUT).unwrap();
    let port = agent.port();
    let ranks: Vec<_> = (0..2)
        .map(|r| {
            thread::spawn(move || {
                let store = c10d::rendezvous(&options("env://"), &rank(r, 2, port, true)).unwrap();
                store
                    .set(&format!("rank{r}"), format!("hi from {r}").as_bytes())
                    .unwrap();
                let other = store.get(&format!("rank{}", 1 - r)).unwrap();
                assert_eq!(other, format!("hi from {}", 1 - r).as_bytes());
                store.add("arrived", 1).unwrap();
            })
        })
        .collect();
    for t in ranks {
        t.join().unwrap();
    }
    // The ranks' keys live under the crate's prefix of the agent's store.
    assert_eq!(agent.get("multigrid/rank0").unwrap(), b"hi from 0");
    assert_eq!(agent.add("multigrid/arrived", 0).unwrap(), 2);
}

/// Plain env:// (MASTER_ADDR/MASTER_PORT): rank 0 serves the store, rank 1 connects.
#[test]
fn rendezvous_with_rank0_server() {
    let port = free_port();
    let opts = options("env://");
    let rank1 = {
        let opts = opts.clone();
        thread::spawn(move || {
            let store = c10d::rendezvous(&opts, &rank(1, 2, port, false)).unwrap();
            store.set("from1", b"one").unwrap();
            store.get("from0").unwrap()
        })
    };
    // Returns once rank 1 has connected (the server waits for the whole world).
    let store = c10d::rendezvous(&opts, &rank(0, 2, port, false)).unwrap();
    assert_eq!(store.port(), port);
    store.set("from0", b"zero").unwrap();
    assert_eq!(store.get("from1").unwrap(), b"one");
    assert_eq!(rank1.join().unwrap(), b"zero");
}

#[test]
fn rendezvous_over_tcp_init_method() {
    let port = free_port();
    let opts = options(&format!("tcp://{LOOPBACK}:{port}"));
    let rank1 = {
        let opts = opts.clone();
        thread::spawn(move || {
            // tcp:// ignores MASTER_ADDR/MASTER_PORT.
            let launch = Launch {
                master_addr: None,
                master_port: None,
                ..rank(1, 2, 0, false)
            };
            let store = c10d::rendezvous(&opts, &launch).unwrap();
            store.add("n", 1).unwrap()
        })
    };
    let store = c10d::rendezvous(&opts, &rank(0, 2, 0, false)).unwrap();
    assert_eq!(rank1.join().unwrap(), 1);
    assert_eq!(store.add("n", 1).unwrap(), 2);
}

#[test]
fn rendezvous_over_file_store() {
    let dir = std::env::temp_dir().join(format!("multigrid-dist-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("store");
    let _ = std::fs::remove_file(&path);
    let opts = options(&format!("file://{}", path.display()));
    let rank1 = {
        let opts = opts.clone();
        thread::spawn(move || {
            let store = c10d::rendezvous(&opts, &rank(1, 2, 0, false)).unwrap();
            store.set("from1", b"file one").unwrap();
            store.get("from0").unwrap()
        })
    };
    let store = c10d::rendezvous(&opts, &rank(0, 2, 0, false)).unwrap();
    store.set("from0", b"file zero").unwrap();
    assert_eq!(store.get("from1").unwrap(), b"file one");
    assert_eq!(rank1.join().unwrap(), b"file zero");
    assert_eq!(store.port(), 0);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_init_methods_are_invalid_arguments() {
    for init in ["udp://x:1", "tcp://nohost", "env://"] {
        let launch = Launch {
            world_size: 2,
            ..Launch::single()
        };
        let err = c10d::rendezvous(&options(init), &launch).unwrap_err();
        assert!(
            matches!(err, multigrid::error::Error::InvalidArgument(_)),
            "{init}: {err}"
        );
    }
}

/// With a GPU, NCCL must start and move data: one rank per GPU, up to two (two ranks cannot
/// share a GPU in one NCCL communicator). Without one, it must fail with an error, not a crash
/// or a hang.
#[test]
fn nccl_reduces_on_a_gpu_and_fails_cleanly_without_one() {
    if let Ok(spec) = std::env::var(NCCL_RANK) {
        return nccl_rank(&spec);
    }
    if tch::Cuda::is_available() {
        match tch::Cuda::device_count() {
            1 => nccl_rank_checks(0, 1, free_port()),
            _ => nccl_ranks_in_processes(2),
        }
        return;
    }
    // A world of one, so the rendezvous succeeds and NCCL's own set-up is what fails.
    let launch = rank(0, 1, free_port(), false);
    let opts = DistOptions {
        timeout: Duration::from_secs(5),
        ..options("env://")
    };
    // Without NCCL: Unsupported at once. With NCCL but no GPU: libtorch's error, caught in the
    // shim, not a crash or a hang.
    let err = c10d::Nccl::connect(&opts, &launch, 0)
        .err()
        .expect("no GPU here");
    eprintln!("{err}");
    if c10d::nccl_available() {
        assert!(matches!(err, multigrid::error::Error::Torch(_)), "{err}");
    } else {
        assert!(
            matches!(err, multigrid::error::Error::Unsupported(_)),
            "{err}"
        );
    }
}

/// Set to `rank,world,port` in the processes [`nccl_ranks_in_processes`] starts.
const NCCL_RANK: &str = "MG_TEST_NCCL_RANK";

/// One rank of [`nccl_ranks_in_processes`], in a process of its own as torchrun starts them:
/// ProcessGroupNCCL keeps per-process state, so two ranks are not two threads of one test.
fn nccl_rank(spec: &str) {
    let v: Vec<usize> = spec.split(',').map(|x| x.parse().unwrap()).collect();
    let [rank, world, port] = v[..] else {
        panic!("{NCCL_RANK}={spec}: expected rank,world,port")
    };
    nccl_rank_checks(rank, world, port as u16);
}

/// Runs this test as [`nccl_rank`] in `world` processes of this test binary, rank r on
/// cuda:r; each must pass, within a deadline (a rank that never meets the others hangs in
/// NCCL's set-up).
fn nccl_ranks_in_processes(world: usize) {
    let dir = std::env::temp_dir().join(format!("multigrid-nccl-ranks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..world)
        .map(|r| {
            let log = std::fs::File::create(dir.join(format!("rank{r}.log"))).unwrap();
            std::process::Command::new(&exe)
                .args([
                    "nccl_reduces_on_a_gpu_and_fails_cleanly_without_one",
                    "--exact",
                    "--nocapture",
                ])
                .env(NCCL_RANK, format!("{r},{world},{port}"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut status = vec![None; world];
    while status.iter().any(Option::is_none) && Instant::now() < deadline {
        for (r, child) in children.iter_mut().enumerate() {
            if status[r].is_none() {
                status[r] = child.try_wait().unwrap();
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    for (r, status) in status.iter().enumerate() {
        let log = std::fs::read_to_string(dir.join(format!("rank{r}.log"))).unwrap();
        // "1 passed": the filter found the test and it ran, not an empty run that exits 0.
        assert!(
            status.is_some_and(|s| s.success()) && log.contains("1 passed"),
            "rank {r} of {world}: {status:?}\n{log}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rank `r` of `world` on cuda:`r` meets the others over a loopback TCPStore at `port`
/// (rank 0 serves it), then all-reduces, broadcasts and all-gathers values that tell the
/// ranks apart. A build without NCCL fails here with the reason (Unsupported): a GPU machine
/// is where the NCCL backend must work.
fn nccl_rank_checks(r: usize, world: usize, port: u16) {
    use multigrid::distributed::Collective;
    use tch::{Device, Kind, Tensor};

    let device = Device::Cuda(r);
    let mut nccl = c10d::Nccl::connect(&options("env://"), &rank(r, world, port, false), r)
        .unwrap_or_else(|e| panic!("rank {r}: NCCL does not start on cuda:{r}: {e}"));
    assert_eq!((nccl.rank(), nccl.world_size()), (r, world));
    assert_eq!(nccl.backend(), "nccl");
    let own = (r + 1) as f64;

    // Two tensors in one call, as the trainer's gradient buckets are reduced.
    let a = Tensor::from_slice(&[own, 10.0 * own])
        .to_kind(Kind::Float)
        .to_device(device);
    let b = Tensor::full([3], own, (Kind::Float, device));
    nccl.all_reduce_sum(&[a.shallow_clone(), b.shallow_clone()])
        .unwrap();
    let sum = (world * (world + 1) / 2) as f32;
    let host = |t: &Tensor| Vec::<f32>::try_from(t.to_device(Device::Cpu)).unwrap();
    assert_eq!(host(&a), [sum, 10.0 * sum], "rank {r}: all-reduce");
    assert_eq!(host(&b), [sum; 3], "rank {r}: all-reduce");

    // Every rank ends with rank 0's values (1.0), its own overwritten.
    let c = Tensor::full([4], own, (Kind::Float, device));
    nccl.broadcast(&[c.shallow_clone()], 0).unwrap();
    assert_eq!(host(&c), [1.0; 4], "rank {r}: broadcast from 0");

    let gathered = nccl.all_gather_f64(&[own, -own]).unwrap();
    let want: Vec<Vec<f64>> = (1..=world).map(|k| vec![k as f64, -(k as f64)]).collect();
    assert_eq!(gathered, want, "rank {r}: all-gather");
    nccl.barrier().unwrap();
}
