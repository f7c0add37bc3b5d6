#!/usr/bin/env python3
"""PySlowFast's Charades mean average precision through scikit-learn, the reference that
multigrid::train::map is held to (tests/map.rs).

    python3 -m venv /tmp/sk-venv && /tmp/sk-venv/bin/pip install numpy scikit-learn
    /tmp/sk-venv/bin/python scripts/map_reference.py   # writes tests/fixtures/map/cases.json

tests/fixtures/map/cases.json is this script's output (scikit-learn 1.9.1, NumPy 2.4.6). Each
case holds row-major [rows, classes] float32 scores and 0/1 targets, `get_map`'s mean AP and
scikit-learn's AP of every class on its own (0.0, with scikit-learn's warning, for a class
with no positive, which `get_map` drops). Scores are rounded to 6 decimals, then to float32,
and written as the shortest decimal that reads back as that float32, so the Rust test and
scikit-learn see the same numbers.
"""
import json
import pathlib
import warnings

import numpy as np
import sklearn
from sklearn.metrics import average_precision_score

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/map/cases.json"


def get_map(preds, labels):
    """slowfast/utils/meters.py's get_map, its logic verbatim (less the print)."""
    preds = preds[:, ~(np.all(labels == 0, axis=0))]
    labels = labels[:, ~(np.all(labels == 0, axis=0))]
    aps = [0]
    try:
        aps = average_precision_score(labels, preds, average=None)
    except ValueError:
        pass
    mean_ap = np.mean(aps)
    return mean_ap


def float32_scores(x, decimals):
    """x rounded to `decimals`, as float32, and the JSON numbers that read back as it."""
    f32 = np.round(x, decimals).astype(np.float32)
    written = [float(np.format_float_positional(v, unique=True)) for v in f32.ravel()]
    assert np.array_equal(np.array(written, dtype=np.float64).astype(np.float32), f32.ravel())
    return f32, written


def case(name, scores, targets, decimals):
    f32, written = float32_scores(scores, decimals)
    targets = targets.astype(np.int64)
    mean_ap = float(get_map(f32, targets))
    with warnings.catch_warnings():
        # A class with no positive: scikit-learn warns and returns 0.0.
        warnings.simplefilter("ignore", UserWarning)
        class_ap = [
            float(average_precision_score(targets[:, c], f32[:, c]))
            for c in range(targets.shape[1])
        ]
    kept = targets.any(axis=0)
    # get_map's multilabel call agrees with the classes taken one by one.
    if kept.sum() > 0:
        assert np.isclose(mean_ap, np.mean(np.array(class_ap)[kept]), rtol=1e-12, atol=0)
    else:
        assert mean_ap == 0.0
    rows, classes = targets.shape
    print(f"{name}: {rows} x {classes}, {int(kept.sum())} classes kept, "
          f"{len(np.unique(f32))} distinct scores, mean AP {mean_ap!r}")
    return {
        "name": name,
        "rows": rows,
        "classes": classes,
        "scores": written,
        "targets": targets.ravel().tolist(),
        "mean_ap": mean_ap,
        "class_ap": class_ap,
    }


def main():
    rng = np.random.default_rng(20240611)
    cases = []

    # Heavy ties: scores to one decimal (11 distinct values over 37 clips), class 3 with no
    # positive, scores loosely tied to the labels so the APs are not all near the base rate.
    n, c = 37, 11
    t = rng.random((n, c)) < 0.3
    t[:, 3] = False
    t[0, 0] = True
    s = np.clip(rng.random((n, c)) * 0.8 + 0.25 * t, 0.0, 1.0)
    cases.append(case("ties_37x11", s, t, 1))

    # Charades-like: 157 classes, ~7 labels per clip, sigmoid scores as a model would give;
    # classes 5 and 80 forced absent, others may be absent by chance.
    n, c = 200, 157
    t = rng.random((n, c)) < 7.0 / 157.0
    t[:, [5, 80]] = False
    logits = rng.normal(-3.0, 1.5, (n, c)) + 2.0 * t
    s = 1.0 / (1.0 + np.exp(-logits))
    cases.append(case("charades_200x157", s, t, 6))

    # One class with a positive: get_map hands scikit-learn a single column (its binary path).
    n, c = 9, 4
    t = np.zeros((n, c), dtype=bool)
    t[[1, 4, 7], 2] = True
    s = rng.random((n, c))
    cases.append(case("one_class_9x4", s, t, 6))

    # No positive at all: scikit-learn rejects the empty matrix and get_map returns 0.
    cases.append(case("no_positive_6x4", rng.random((6, 4)), np.zeros((6, 4), dtype=bool), 6))

    OUT.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "generator": "scripts/map_reference.py",
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "cases": cases,
    }
    OUT.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
