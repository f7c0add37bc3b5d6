//! c10d's stores through the C++ shim: TCPStore on loopback (port 0, never a fixed port),
//! rendezvous as torchrun sets it up (agent store and plain), and FileStore. CPU only.
#![cfg(feature = "torch")]

use std::thread;
use std::time::{Duration, Instant};

use multigrid::dist::c10d::{self, Store};
use multigrid::dist::{DistOptions, Launch};

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

#[test]
fn nccl_without_a_gpu_or_build_fails_cleanly() {
    if c10d::nccl_available() && tch::Cuda::device_count() > 0 {
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
