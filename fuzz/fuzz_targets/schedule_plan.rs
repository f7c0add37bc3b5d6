//! Config JSON into the schedule and the plan, then every query of both (src/ffi/schedule.rs,
//! src/ffi/plan.rs) plus mg_collate_step_len.
//!
//! Input: `JSON [NUL params]`. The bytes before the first NUL are the config (the C API takes
//! a NUL-terminated string); the bytes after it choose dataset size, world size, rank, seed,
//! the steps and epochs queried and the SlowFast alpha. Without a NUL the plan is made for
//! 1000 clips on one rank.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multigrid::ffi;
use multigrid_fuzz::{check, ok, Handles, Reader};

/// Queries a schedule stage by stage; bounded so a 1000-stage schedule stays cheap.
const MAX_STAGES_QUERIED: usize = 64;
/// Epochs whose step counts are summed against the total.
const MAX_EPOCHS_SUMMED: u32 = 4096;
/// Largest index buffer allocated for mg_plan_step_indices.
const MAX_INDICES: usize = 1 << 16;

fn dataset_size(r: &mut Reader) -> u64 {
    // Magnitude first, so small sizes (the interesting ones) are common and 2^48 + 1 reachable.
    let bits = u32::from(r.u8() % 50);
    r.u64() & ((1u64 << bits) | ((1u64 << bits) - 1))
}

fn world_size(r: &mut Reader) -> u32 {
    match r.u8() {
        255 => r.u32(),
        b => u32::from(b % 16),
    }
}

/// Runs every schedule query; returns max_epoch and whether known bug 9 was met.
fn schedule_queries(s: *const ffi::mg_schedule, r: &mut Reader) -> u32 {
    let mut n = 0usize;
    assert!(ok(
        "mg_schedule_num_stages",
        ffi::mg_schedule_num_stages(s, &mut n)
    ));
    assert!(n > 0, "a schedule without stages");
    let mut max_epoch = 0u32;
    assert!(ok(
        "mg_schedule_max_epoch",
        ffi::mg_schedule_max_epoch(s, &mut max_epoch)
    ));
    assert!(max_epoch > 0, "a schedule of 0 epochs");
    // Every stage up to a bound, in order, then the last two and two past the end.
    let queried =
        (0..n.min(MAX_STAGES_QUERIED)).chain(n.saturating_sub(2).max(MAX_STAGES_QUERIED)..n + 2);
    let mut prev_end = 0u32;
    for i in queried {
        let mut st = ffi::mg_stage::default();
        let status = check("mg_schedule_stage", ffi::mg_schedule_stage(s, i, &mut st));
        if i >= n {
            assert_eq!(status, ffi::MG_STATUS_OUT_OF_RANGE, "stage {i} of {n}");
            continue;
        }
        assert_eq!(status, ffi::MG_STATUS_OK, "stage {i} of {n}");
        assert!(
            st.start_epoch <= st.end_epoch && st.end_epoch <= max_epoch,
            "stage {i}: epochs {}..{} of {max_epoch}",
            st.start_epoch,
            st.end_epoch
        );
        if i < MAX_STAGES_QUERIED {
            assert_eq!(
                st.start_epoch, prev_end,
                "stage {i} does not start where stage {i} - 1 ends"
            );
        }
        prev_end = st.end_epoch;
        let phases = st.num_short_cycle_phases as usize;
        assert!(phases == 1 || phases == 3, "stage {i}: {phases} phases");
        // A factor of 0 (fuzz/README.md, bug 9) is refused by the schedule now.
        let factors = &st.short_cycle_batch_factors[..phases];
        assert!(factors.iter().all(|&f| f > 0), "stage {i}: {st:?}");
        assert!(
            st.short_cycle_crops[..phases].iter().all(|&c| c > 0),
            "stage {i}: {st:?}"
        );
    }
    assert_eq!(prev_end, max_epoch, "the last stage ends before max_epoch");
    // LR at the edges and at an epoch from the input; errors only for negative / non-finite.
    let from_input = r.f64();
    for epoch in [
        0.0,
        0.5,
        f64::from(max_epoch) - 1e-9,
        f64::from(max_epoch),
        f64::from(max_epoch) * 2.0 + 1.0,
        1e300,
        -0.0,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        from_input,
    ] {
        let mut lr = f64::NAN;
        let status = check(
            "mg_schedule_lr_at",
            ffi::mg_schedule_lr_at(s, epoch, &mut lr),
        );
        if epoch.is_finite() && epoch >= 0.0 {
            assert_eq!(status, ffi::MG_STATUS_OK, "lr_at({epoch})");
            assert!(lr.is_finite() && lr >= 0.0, "lr_at({epoch}) = {lr}");
        } else {
            assert_eq!(status, ffi::MG_STATUS_INVALID_ARGUMENT, "lr_at({epoch})");
        }
    }
    let e_in = r.u32();
    for epoch in (0..max_epoch.min(64)).chain([max_epoch - 1, max_epoch, u32::MAX, e_in]) {
        let mut v = false;
        assert!(ok(
            "mg_schedule_is_eval_epoch",
            ffi::mg_schedule_is_eval_epoch(s, epoch, &mut v)
        ));
    }
    // NULL handles and out-pointers are errors, not crashes.
    let null = std::ptr::null_mut();
    assert_eq!(
        check(
            "mg_schedule_num_stages",
            ffi::mg_schedule_num_stages(s, null)
        ),
        ffi::MG_STATUS_NULL_ARGUMENT
    );
    assert_eq!(
        check(
            "mg_schedule_max_epoch",
            ffi::mg_schedule_max_epoch(std::ptr::null(), &mut max_epoch)
        ),
        ffi::MG_STATUS_NULL_ARGUMENT
    );
    max_epoch
}

fn step_queries(h: &Handles, step: u64, dataset_size: u64, total: u64, r: &mut Reader) {
    let mut st = ffi::mg_step::default();
    let status = check("mg_plan_step", ffi::mg_plan_step(h.plan, step, &mut st));
    let mut len = 0usize;
    let st_i = check(
        "mg_plan_step_indices",
        ffi::mg_plan_step_indices(h.plan, step, std::ptr::null_mut(), 0, &mut len),
    );
    let (mut slow, mut fast) = (0usize, 0usize);
    let alpha = u32::from(r.u8() % 10);
    let st_l = check(
        "mg_collate_step_len",
        ffi::mg_collate_step_len(h.plan, step, alpha, &mut slow, &mut fast),
    );
    if step >= total {
        assert_eq!(
            status,
            ffi::MG_STATUS_OUT_OF_RANGE,
            "step {step} of {total}"
        );
        assert_eq!(st_i, ffi::MG_STATUS_OUT_OF_RANGE, "indices of step {step}");
        assert_eq!(st_l, ffi::MG_STATUS_OUT_OF_RANGE, "lens of step {step}");
        return;
    }
    assert_eq!(status, ffi::MG_STATUS_OK, "step {step} of {total}");
    // An alpha above the step's frames leaves no slow pathway: rejected.
    if alpha > st.num_frames {
        assert_eq!(
            st_l,
            ffi::MG_STATUS_INVALID_ARGUMENT,
            "alpha {alpha}, {st:?}"
        );
    } else {
        assert_eq!(
            st_l,
            ffi::MG_STATUS_OK,
            "lens of step {step}, alpha {alpha}"
        );
    }
    assert_eq!(st.step, step);
    assert!(
        st.iteration < st.iterations_in_epoch
            && st.batch_size > 0
            && st.num_frames > 0
            && st.crop_size > 0
            && st.sampling_rate_min <= st.sampling_rate_max
            && st.jitter_min <= st.jitter_max
            && st.bn_groups > 0
            && st.bn_sync_ranks > 0
            && st.lr.is_finite()
            && st.lr >= 0.0
            && u64::from(st.batch_size) <= st.global_batch_size,
        "step {step}: {st:?}"
    );
    let mut in_epoch = 0u64;
    assert!(ok(
        "mg_plan_steps_in_epoch",
        ffi::mg_plan_steps_in_epoch(h.plan, st.epoch, &mut in_epoch)
    ));
    assert_eq!(in_epoch, st.iterations_in_epoch, "step {step}: {st:?}");
    let want_fast =
        st.batch_size as usize * 3 * st.num_frames as usize * (st.crop_size as usize).pow(2);
    if st_l == ffi::MG_STATUS_OK {
        assert_eq!(fast, want_fast, "fast length of step {step}");
        if alpha == 0 {
            assert_eq!(slow, 0);
        }
    }
    // The index buffer: first too small (the count comes back), then exactly right.
    if st_i == ffi::MG_STATUS_BUFFER_TOO_SMALL {
        assert_eq!(len, st.batch_size as usize, "index count of step {step}");
    } else {
        assert_eq!(st_i, ffi::MG_STATUS_OK);
        assert_eq!(len, 0);
    }
    if len <= MAX_INDICES {
        let mut buf = vec![u64::MAX; len];
        let mut got = 0usize;
        assert!(ok(
            "mg_plan_step_indices",
            ffi::mg_plan_step_indices(h.plan, step, buf.as_mut_ptr(), buf.len(), &mut got)
        ));
        assert_eq!(got, len);
        assert!(
            buf.iter().all(|&i| i < dataset_size),
            "step {step}: an index past the dataset of {dataset_size}"
        );
    }
}

fn plan_queries(h: &Handles, dataset_size: u64, max_epoch: u32, r: &mut Reader) {
    let total = h.total_steps();
    assert!(total > 0, "a plan of 0 steps was accepted");
    if max_epoch <= MAX_EPOCHS_SUMMED {
        let mut sum = 0u64;
        for e in 0..max_epoch {
            let mut n = 0u64;
            assert!(ok(
                "mg_plan_steps_in_epoch",
                ffi::mg_plan_steps_in_epoch(h.plan, e, &mut n)
            ));
            sum = sum.checked_add(n).expect("steps overflow u64");
        }
        assert_eq!(sum, total, "steps per epoch do not add up to the total");
    }
    let mut n = 0u64;
    assert_eq!(
        check(
            "mg_plan_steps_in_epoch",
            ffi::mg_plan_steps_in_epoch(h.plan, max_epoch, &mut n)
        ),
        ffi::MG_STATUS_OUT_OF_RANGE
    );
    let (a, b) = (r.u64(), r.u64());
    for step in [
        0,
        1,
        total / 2,
        total - 1,
        total,
        total + 1,
        u64::MAX,
        a % total,
        b,
    ] {
        step_queries(h, step, dataset_size, total, r);
    }
}

fuzz_target!(|data: &[u8]| {
    let nul = data.iter().position(|&b| b == 0);
    let (json, params) = match nul {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(json) = std::ffi::CString::new(json) else {
        return;
    };
    let mut schedule = std::ptr::null_mut();
    if !ok(
        "mg_schedule_new",
        ffi::mg_schedule_new(json.as_ptr(), &mut schedule),
    ) {
        assert!(schedule.is_null(), "out written on failure");
        return;
    }
    let mut h = Handles {
        schedule,
        plan: std::ptr::null_mut(),
    };
    let mut r = Reader::new(params);
    let (dataset_size, world, rank, seed) = if r.is_empty() {
        (1000, 1, 0, 0)
    } else {
        let d = dataset_size(&mut r);
        let w = world_size(&mut r);
        let rank = match r.u8() {
            255 => r.u32(),
            b => u32::from(b) % w.max(1),
        };
        (d, w, rank, r.u64())
    };
    let max_epoch = schedule_queries(h.schedule, &mut r);
    if !ok(
        "mg_plan_new",
        ffi::mg_plan_new(h.schedule, dataset_size, world, rank, seed, &mut h.plan),
    ) {
        assert!(h.plan.is_null(), "out written on failure");
        return;
    }
    // A plan outlives its schedule (documented): free the schedule before the queries.
    ffi::mg_schedule_free(h.schedule);
    h.schedule = std::ptr::null_mut();
    plan_queries(&h, dataset_size, max_epoch, &mut r);
});
