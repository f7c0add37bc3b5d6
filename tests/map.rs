//! The Rust mean average precision against PySlowFast's `get_map` run through scikit-learn,
//! through the numbers in tests/fixtures/map/cases.json (written by scripts/map_reference.py;
//! its docstring says how). No Python is needed here.
//!
//! Cases: 37 x 11 with scores to one decimal (ties everywhere) and a class with no positive,
//! 200 x 157 Charades-like sigmoid scores, a single class with positives (scikit-learn's
//! binary path) and no positive at all (PySlowFast's 0).
#![cfg(feature = "torch")]

use std::path::Path;

use multigrid::train::map::{average_precision, mean_average_precision};
use serde::Deserialize;

/// Relative tolerance: both sides are float64 sums of the same terms, apart from order.
const RTOL: f64 = 1e-9;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    rows: usize,
    classes: usize,
    /// The float32 values scikit-learn saw, written as decimals that read back as them.
    scores: Vec<f64>,
    targets: Vec<f32>,
    mean_ap: f64,
    class_ap: Vec<f64>,
}

fn load() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/map/cases.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/map_reference.py)", path.display()));
    let fixture: Fixture = serde_json::from_str(&text).expect("cases.json");
    fixture.cases
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= RTOL * want.abs(),
        "{what}: ours {got}, scikit-learn {want} (difference {:e})",
        got - want
    );
}

#[test]
fn mean_average_precision_matches_pyslowfast() {
    let cases = load();
    assert_eq!(cases.len(), 4);
    for case in &cases {
        assert_eq!(case.scores.len(), case.rows * case.classes, "{}", case.name);
        let scores: Vec<f32> = case.scores.iter().map(|&s| s as f32).collect();
        let map = mean_average_precision(&scores, &case.targets, case.classes).unwrap();
        assert_close(map, case.mean_ap, &format!("{} mean AP", case.name));
    }
    // The fixture exercises what it claims to.
    let ties = &cases[0];
    let distinct: std::collections::BTreeSet<u64> =
        ties.scores.iter().map(|s| s.to_bits()).collect();
    assert!(distinct.len() <= 11, "{} distinct scores", distinct.len());
    assert_eq!(cases[3].mean_ap, 0.0);
}

#[test]
fn every_class_matches_scikit_learn() {
    for case in load() {
        assert_eq!(case.class_ap.len(), case.classes, "{}", case.name);
        let mut without_positive = 0;
        for class in 0..case.classes {
            let column: Vec<f32> = (0..case.rows)
                .map(|r| case.scores[r * case.classes + class] as f32)
                .collect();
            let positives: Vec<bool> = (0..case.rows)
                .map(|r| case.targets[r * case.classes + class] > 0.5)
                .collect();
            without_positive += usize::from(!positives.contains(&true));
            let want = case.class_ap[class];
            let got = average_precision(&column, &positives);
            assert_close(got, want, &format!("{} class {class}", case.name));
        }
        assert!(
            without_positive > 0,
            "{}: no class without a positive",
            case.name
        );
    }
}
