//! `multigrid bench scale`: the projection's model (ring all-reduce, overlap, bf16 bytes, plan
//! steps) checked through its JSON, the table on the committed H200 figures, and its errors.
#![cfg(feature = "torch")]

mod common;

use std::process::{Command, Output};

use common::{repo, scratch};
use serde_json::Value;

fn multigrid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_multigrid"))
        .args(["bench", "scale"])
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap()
}

fn json(args: &[&str]) -> Value {
    let out = multigrid(&[args, &["--json"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench scale {args:?} failed: {err}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

fn rows(r: &Value) -> &Vec<Value> {
    r["rows"].as_array().unwrap()
}

/// The row of `gpus` GPUs over `link` with `grads` gradients and `overlap`.
fn row<'a>(r: &'a Value, gpus: u64, link: &str, grads: &str, overlap: bool) -> &'a Value {
    rows(r)
        .iter()
        .find(|x| {
            x["gpus"] == gpus
                && x["link"].as_str().unwrap().starts_with(link)
                && x["grads"] == grads
                && x["overlap"] == overlap
        })
        .unwrap_or_else(|| panic!("no row {gpus} {link} {grads} {overlap}"))
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs())
}

#[test]
fn table_on_the_committed_h200_figures() {
    let out = multigrid(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let assumptions = text.find("assumptions:").expect("assumptions printed");
    let header = text.find(" GPUs ").expect("table header");
    assert!(
        assumptions < header,
        "assumptions come before the table:\n{text}"
    );
    // One NVLink node at 8 GPUs; IB and Ethernet beyond; fp32/bf16 x overlap off/on each.
    let table: Vec<&str> = text[header..]
        .lines()
        .skip(1)
        .filter(|l| l.contains(" Gb/s ") || l.contains("NVLink"))
        .collect();
    let count = |n: &str| {
        table
            .iter()
            .filter(|l| l.split_whitespace().next() == Some(n))
            .count()
    };
    assert_eq!((count("8"), count("32"), count("128")), (4, 8, 8), "{text}");
    for what in [
        "IB 400 Gb/s",
        "Ethernet 25 Gb/s",
        "measured",
        "interpolated by MACs",
        "H200",
    ] {
        assert!(text.contains(what), "{what:?} missing:\n{text}");
    }
}

#[test]
fn one_gpu_is_fully_efficient_and_matches_the_plan() {
    let r = json(&["--gpus", "1,8"]);
    for x in rows(&r).iter().filter(|x| x["gpus"] == 1) {
        assert_eq!(f(&x["comm_s"]), 0.0, "{x}");
        assert_eq!(f(&x["efficiency_baseline"]), 1.0, "{x}");
        assert_eq!(f(&x["efficiency_multigrid"]), 1.0, "{x}");
        assert!(close(
            f(&x["hours_baseline"]),
            f(&r["one_gpu_hours"][0]),
            1e-12
        ));
    }
    // Spec 1.5: 240,000 clips on 8 GPUs, 3,750 baseline steps per epoch for 239 epochs, each at
    // the measured 8x32x224 step.
    let x = row(&r, 8, "NVLink", "fp32", false);
    let compute_h = f(&x["hours_baseline"]) * f(&x["efficiency_baseline"]);
    assert!(close(compute_h, 896_250.0 * 0.1053 / 3600.0, 1e-9), "{x}");
    assert_eq!(r["one_gpu_steps"][0], 240_000 / 8 * 239);
    // Multigrid: 3.4x fewer steps at about the same cost each (spec 1.5).
    let ratio = f(&x["ratio"]);
    assert!((0.28..0.33).contains(&ratio), "multigrid/baseline {ratio}");
}

#[test]
fn ring_all_reduce_inside_and_across_nodes() {
    let r = json(&["--gpus", "8,32"]);
    let links = r["links"].as_array().unwrap();
    let (nvl, ib) = (&links[0], &links[1]);
    let ring = |k: f64, b: f64, l: &Value| {
        2.0 * (k - 1.0) / k * b / f(&l["bytes_per_s"]) + 2.0 * (k - 1.0) * f(&l["hop_s"])
    };
    let base = f(&r["base_s"]);
    for (i, grads) in ["fp32", "bf16"].iter().enumerate() {
        let buckets: Vec<f64> = r["gradients"][i]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(f)
            .collect();
        let one_node: f64 = buckets.iter().map(|&b| base + ring(8.0, b, nvl)).sum();
        let four: f64 = buckets
            .iter()
            .map(|&b| base + ring(8.0, b, nvl) + ring(4.0, b, ib))
            .sum();
        assert!(close(
            f(&row(&r, 8, "NVLink", grads, false)["comm_s"]),
            one_node,
            1e-12
        ));
        assert!(close(
            f(&row(&r, 32, "IB", grads, false)["comm_s"]),
            four,
            1e-12
        ));
    }
    // 400 Gb/s on one NIC per node is 50 GB/s.
    assert!(close(f(&ib["bytes_per_s"]), 50e9, 1e-12));
}

#[test]
fn bf16_halves_the_bytes_and_about_halves_the_time() {
    let r = json(&["--gpus", "32"]);
    let g = &r["gradients"];
    assert_eq!(
        (g[0]["grads"].as_str(), g[1]["grads"].as_str()),
        (Some("fp32"), Some("bf16"))
    );
    assert_eq!(f(&g[0]["bytes"]), 2.0 * f(&g[1]["bytes"]));
    // R50's 34.6M parameters (bench dist's figure): 138 MB of fp32 gradient.
    assert!(close(f(&g[0]["bytes"]), 4.0 * f(&r["parameters"]), 1e-12));
    assert!((34.0e6..35.0e6).contains(&f(&r["parameters"])));
    let fp32 = f(&row(&r, 32, "Ethernet", "fp32", false)["comm_s"]);
    let bf16 = f(&row(&r, 32, "Ethernet", "bf16", false)["comm_s"]);
    assert!(
        (0.45..0.55).contains(&(bf16 / fp32)),
        "bf16 {bf16} s against fp32 {fp32} s"
    );
}

#[test]
fn overlap_never_slower_and_slow_links_cost_more() {
    let r = json(&[]);
    for x in rows(&r) {
        let n = x["gpus"].as_u64().unwrap();
        let (link, grads) = (x["link"].as_str().unwrap(), x["grads"].as_str().unwrap());
        let (off, on) = (
            row(&r, n, link, grads, false),
            row(&r, n, link, grads, true),
        );
        for k in ["hours_baseline", "hours_multigrid", "exposed_s"] {
            assert!(
                f(&on[k]) <= f(&off[k]),
                "overlap slower: {on} against {off}"
            );
        }
        assert!(f(&x["exposed_s"]) <= f(&x["comm_s"]) + 1e-15, "{x}");
        for k in ["efficiency_baseline", "efficiency_multigrid"] {
            assert!(f(&x[k]) > 0.0 && f(&x[k]) <= 1.0, "{x}");
        }
    }
    for (grads, overlap) in [
        ("fp32", false),
        ("fp32", true),
        ("bf16", false),
        ("bf16", true),
    ] {
        for k in ["efficiency_baseline", "efficiency_multigrid"] {
            let e = |n, l| f(&row(&r, n, l, grads, overlap)[k]);
            assert!(e(32, "Ethernet") < e(32, "IB"), "{grads} {overlap} {k}");
            assert!(e(128, "IB") < e(32, "IB") && e(32, "IB") < e(8, "NVLink"));
            assert!(e(128, "Ethernet") < e(32, "Ethernet"));
        }
    }
    // A quarter of the IB bandwidth: lower efficiency in every IB row.
    let slow = json(&["--ib-gbps", "100"]);
    for x in rows(&slow).iter().filter(|x| x["link"] == "IB 100 Gb/s") {
        let n = x["gpus"].as_u64().unwrap();
        let fast = row(
            &r,
            n,
            "IB 400",
            x["grads"].as_str().unwrap(),
            x["overlap"] == true,
        );
        assert!(
            f(&x["efficiency_baseline"]) < f(&fast["efficiency_baseline"]),
            "{x}"
        );
    }
}

#[test]
fn without_backward_to_hide_under_overlap_changes_nothing() {
    let r = json(&["--gpus", "32", "--backward-fraction", "0"]);
    for x in rows(&r) {
        let (link, grads) = (x["link"].as_str().unwrap(), x["grads"].as_str().unwrap());
        let (off, on) = (
            row(&r, 32, link, grads, false),
            row(&r, 32, link, grads, true),
        );
        assert!(
            close(f(&off["hours_baseline"]), f(&on["hours_baseline"]), 1e-12),
            "{on}"
        );
    }
}

#[test]
fn unmeasured_shapes_are_interpolated_within_the_measured_range() {
    let r = json(&["--gpus", "8"]);
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("benches/h200_step_times.json")).unwrap(),
    )
    .unwrap();
    let series = &data["series"][0];
    let range = &series["range_all_k400_shapes"];
    let shapes = r["shapes"].as_array().unwrap();
    assert_eq!(shapes.len(), 8, "the K400 recipe's eight per-rank shapes");
    for s in shapes {
        let measured = series["steps"].as_array().unwrap().iter().find(|p| {
            p["batch"] == s["batch"] && p["frames"] == s["frames"] && p["crop"] == s["crop"]
        });
        match measured {
            Some(p) => {
                assert_eq!(s["source"], "measured");
                assert_eq!(f(&s["seconds"]), f(&p["seconds"]));
            }
            None => {
                assert!(
                    s["source"]
                        .as_str()
                        .unwrap()
                        .starts_with("interpolated by MACs"),
                    "{s}"
                );
                let t = f(&s["seconds"]);
                assert!(
                    f(&range[0]) <= t && t <= f(&range[1]),
                    "{s} outside {range}"
                );
            }
        }
    }
}

#[test]
fn step_times_from_a_runs_timing_line() {
    let dir = scratch("bench_scale_timing");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("metrics.jsonl");
    // The same shape in two stages pools its steps; the per-step mean is what counts.
    let lines = [
        r#"{"type":"eval","top1":50.0}"#,
        r#"{"type":"timing","shapes":[{"stage":0,"frames":32,"crop":224,"batch":8,"steps":10,"seconds":1.0},{"stage":3,"frames":32,"crop":224,"batch":8,"steps":30,"seconds":5.0}]}"#,
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let r = json(&["--gpus", "8", "--step-times", path.to_str().unwrap()]);
    let s = &r["shapes"].as_array().unwrap()[0];
    assert_eq!(
        (s["batch"].as_u64(), s["source"].as_str()),
        (Some(8), Some("measured"))
    );
    assert!(close(f(&s["seconds"]), 0.15, 1e-12), "{s}");
    assert!(r["step_times"].as_str().unwrap().contains("timing line"));
    // Every other shape is scaled by MACs from the one measured.
    assert!(r["shapes"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .all(|s| s["source"]
            .as_str()
            .unwrap()
            .starts_with("scaled by MACs from 8x32x224")));
}

#[test]
fn errors_name_what_is_wrong() {
    let dir = scratch("bench_scale_errors");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"series":[{"name":"x","steps":[{"batch":8,"frames":32,"crop":224,"seconds":-1}]}]}"#,
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    let missing = dir.join("missing.json");
    let missing = missing.to_str().unwrap();
    for (args, want) in [
        (vec!["--step-times", missing], "missing.json"),
        (vec!["--step-times", bad], "8x32x224 has seconds -1"),
        (vec!["--series", "nope"], "no series \"nope\""),
        (vec!["--gpus", "12"], "--gpus 12"),
        (vec!["--ib-gbps", "0"], "--ib-gbps"),
        (vec!["--backward-fraction", "1.5"], "--backward-fraction"),
        (vec!["--config-gpus", "7"], "--config-gpus 7"),
    ] {
        let out = multigrid(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
    }
}
