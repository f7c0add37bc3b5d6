//! PySlowFast's Charades metric: mean average precision over the classes that have a positive
//! (slowfast/utils/meters.py, `get_map`), with scikit-learn's `average_precision_score` per
//! class. tests/map.rs holds both to scikit-learn's own numbers.

use crate::error::{Error, Result};

/// scikit-learn's average precision of one class: the sum over distinct score thresholds, from
/// the highest, of (R_k - R_{k-1}) * P_k, where R_k and P_k are the recall and precision of
/// calling every clip scored >= the k-th threshold positive (R_0 = 0).
///
/// Equal scores form one threshold, as in `precision_recall_curve`: a tie is one operating
/// point, so its result cannot depend on the order the tied clips come in. With no positive
/// the result is 0.0, which scikit-learn returns (with a warning) as well. Scores must be
/// finite ([`mean_average_precision`] checks them).
///
/// # Panics
/// When `scores` and `positives` differ in length: a caller's bug, which zipping them would
/// hide.
pub fn average_precision(scores: &[f32], positives: &[bool]) -> f64 {
    assert_eq!(
        scores.len(),
        positives.len(),
        "average_precision: {} scores but {} labels",
        scores.len(),
        positives.len()
    );
    let total = positives.iter().filter(|&&p| p).count();
    if total == 0 {
        return 0.0;
    }
    // Descending and stable, as scikit-learn's argsort. `total_cmp` orders -0.0 just below
    // 0.0 with nothing in between, so the `==` grouping below still ties them, as NumPy's
    // `diff(y_score) != 0` does.
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));

    let total = total as f64;
    let (mut ap, mut recall_before) = (0.0f64, 0.0f64);
    let mut true_pos = 0usize;
    for (seen, &i) in order.iter().enumerate() {
        true_pos += usize::from(positives[i]);
        let last_of_threshold = order
            .get(seen + 1)
            .is_none_or(|&next| scores[next] != scores[i]);
        if last_of_threshold {
            // scikit-learn's arithmetic: recall tp / P, then its difference, times tp / (tp + fp).
            let recall = true_pos as f64 / total;
            let precision = true_pos as f64 / (seen + 1) as f64;
            ap += (recall - recall_before) * precision;
            recall_before = recall;
        }
    }
    ap
}

/// PySlowFast's `get_map` over row-major [N, classes] `scores` and `targets` (1.0 positive,
/// 0.0 not; anything > 0.5 counts as positive): the mean of [`average_precision`] over the
/// classes with at least one positive. A class absent from the set has no defined AP and
/// PySlowFast drops it rather than count it as 0. With no class left the result is 0.0,
/// PySlowFast's value (its `aps = [0]` when scikit-learn rejects the empty matrix).
pub fn mean_average_precision(scores: &[f32], targets: &[f32], classes: usize) -> Result<f64> {
    if classes == 0 {
        return Err(Error::InvalidArgument(
            "mean average precision needs at least one class, got classes = 0".into(),
        ));
    }
    if scores.len() != targets.len() {
        return Err(Error::InvalidArgument(format!(
            "mean average precision: {} scores but {} targets",
            scores.len(),
            targets.len()
        )));
    }
    if scores.len() % classes != 0 {
        return Err(Error::InvalidArgument(format!(
            "mean average precision: {} scores are not whole rows of {classes} classes",
            scores.len()
        )));
    }
    // A NaN or infinity has no place in a ranking; scikit-learn refuses it too.
    if let Some(at) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "mean average precision: score of clip {} class {} is {}",
            at / classes,
            at % classes,
            scores[at]
        )));
    }

    let (mut sum, mut kept) = (0.0f64, 0usize);
    let (mut column, mut positives) = (Vec::new(), Vec::new());
    for class in 0..classes {
        column.clear();
        positives.clear();
        column.extend(scores.iter().skip(class).step_by(classes));
        positives.extend(
            targets
                .iter()
                .skip(class)
                .step_by(classes)
                .map(|&t| t > 0.5),
        );
        if positives.contains(&true) {
            sum += average_precision(&column, &positives);
            kept += 1;
        }
    }
    Ok(if kept == 0 { 0.0 } else { sum / kept as f64 })
}

#[cfg(test)]
mod tests {
    use super::{average_precision, mean_average_precision};
    use crate::error::Error;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn hand_computed() {
        // Descending: 0.9 +, 0.8 -, 0.7 +, 0.6 -, 0.5 +; three positives.
        //   0.9: tp 1 of 1 seen, R 1/3, P 1   -> (1/3 - 0) * 1     = 1/3
        //   0.8: tp unchanged, R unchanged     -> 0
        //   0.7: tp 2 of 3 seen, R 2/3, P 2/3 -> (2/3 - 1/3) * 2/3 = 2/9
        //   0.6: tp unchanged                  -> 0
        //   0.5: tp 3 of 5 seen, R 1, P 3/5   -> (1 - 2/3) * 3/5   = 1/5
        // AP = 1/3 + 2/9 + 1/5 = (15 + 10 + 9) / 45 = 34/45.
        let scores = [0.7, 0.5, 0.9, 0.6, 0.8];
        let positives = [true, true, true, false, false];
        assert!(close(average_precision(&scores, &positives), 34.0 / 45.0));
    }

    #[test]
    fn ties_are_one_threshold() {
        // One threshold holding all three 0.5s: R 1, P 2/3 -> AP 2/3. Taken one by one in the
        // stable order (+, -, +) it would be 1/2 * 1 + 1/2 * 2/3 = 5/6.
        let positives = [true, false, true, false];
        let ap = average_precision(&[0.5, 0.5, 0.5, 0.1], &positives);
        assert!(close(ap, 2.0 / 3.0), "{ap}");
        let reordered = average_precision(&[0.5, 0.5, 0.5, 0.1], &[false, true, true, false]);
        assert!(close(reordered, 2.0 / 3.0), "{reordered}");
        // -0.0 == 0.0: one threshold with R 1, P 1/2 (1.0 if 0.0 came first on its own).
        let signed = average_precision(&[-0.0, 0.0], &[false, true]);
        assert!(close(signed, 0.5), "{signed}");
    }

    #[test]
    fn class_without_positives_is_dropped() {
        // Rows of [class 0, class 1, class 2]. Class 0 is the hand-computed 34/45; class 1 has
        // its one positive second behind 0.9 (R 1, P 1/2 -> 1/2); class 2 has no positive and
        // is left out, not averaged in as 0: (34/45 + 1/2) / 2 = 113/180.
        let scores = [
            0.7, 0.1, 0.3, //
            0.5, 0.4, 0.2, //
            0.9, 0.3, 0.9, //
            0.6, 0.2, 0.1, //
            0.8, 0.9, 0.5,
        ];
        let targets = [
            1.0, 0.0, 0.0, //
            1.0, 1.0, 0.0, //
            1.0, 0.0, 0.0, //
            0.0, 0.0, 0.0, //
            0.0, 0.0, 0.0,
        ];
        let map = mean_average_precision(&scores, &targets, 3).unwrap();
        assert!(close(map, 113.0 / 180.0), "{map}");
        assert_eq!(average_precision(&[0.3, 0.1], &[false, false]), 0.0);
    }

    #[test]
    fn no_positive_anywhere_is_zero() {
        let scores = [0.2, 0.8, 0.5, 0.1];
        assert_eq!(mean_average_precision(&scores, &[0.0; 4], 2).unwrap(), 0.0);
        assert_eq!(mean_average_precision(&[], &[], 5).unwrap(), 0.0);
    }

    #[test]
    fn errors_name_the_problem() {
        let message = |r: crate::error::Result<f64>| match r {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        assert!(message(mean_average_precision(&[0.5], &[1.0], 0)).contains("classes = 0"));
        assert!(message(mean_average_precision(&[0.5, 0.2], &[1.0], 1))
            .contains("2 scores but 1 targets"));
        assert!(message(mean_average_precision(&[0.5; 3], &[1.0; 3], 2))
            .contains("not whole rows of 2 classes"));
        let nan = message(mean_average_precision(
            &[0.5, 0.2, f32::NAN, 0.1],
            &[1.0; 4],
            2,
        ));
        assert!(nan.contains("clip 1 class 0 is NaN"), "{nan}");
        let inf = message(mean_average_precision(&[f32::INFINITY], &[1.0], 1));
        assert!(inf.contains("is inf"), "{inf}");
    }
}
