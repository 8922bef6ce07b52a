//! The numbers (pass@k estimators, breakdowns, hacking rate, greedy), reports built from fixture run
//! directories (tables, SVG and PNG), aggregation over runs, and the errors for inputs that cannot be
//! reported.

mod support;

use std::path::{Path, PathBuf};

use report::eval::{first_k, ks, model_names, pass_at_k};
use report::summary::Stat;
use report::{Cell, Estimator, ModelReport, Verdict};
use support::{buckets, eval_report, json, key, verdicts, write_run};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[track_caller]
fn assert_close(got: f64, want: f64, what: &str) {
    assert!(close(got, want), "{what}: got {got}, want {want}");
}

// ---- estimators ------------------------------------------------------------------------------

#[test]
fn unbiased_pass_at_k_matches_hand_computed_values() {
    // (n, c, k, 1 - C(n-c, k) / C(n, k) worked out by hand)
    let cases: &[(usize, usize, usize, f64)] = &[
        (1, 0, 1, 0.0),
        (1, 1, 1, 1.0),
        (4, 0, 1, 0.0),
        (4, 1, 1, 0.25),
        (4, 1, 2, 0.5),        // 1 - C(3,2)/C(4,2) = 1 - 3/6
        (4, 2, 2, 5.0 / 6.0),  // 1 - C(2,2)/C(4,2) = 1 - 1/6
        (4, 4, 1, 1.0),        // c = n
        (5, 2, 3, 0.9),        // 1 - C(3,3)/C(5,3) = 1 - 1/10
        (10, 3, 4, 5.0 / 6.0), // 1 - C(7,4)/C(10,4) = 1 - 35/210
        (8, 0, 8, 0.0),        // n = k, c = 0
        (8, 1, 8, 1.0),        // n = k, one correct
        (8, 8, 8, 1.0),        // n = k = c
        (8, 3, 1, 0.375),
    ];
    for &(n, c, k, want) in cases {
        assert_close(
            pass_at_k(n, c, k),
            want,
            &format!("pass@{k} with n={n}, c={c}"),
        );
    }
}

#[test]
fn first_k_passes_when_any_of_the_first_k_samples_is_correct() {
    let cases: &[(&str, &[f64])] = &[
        ("xVxx", &[0.0, 1.0, 1.0, 1.0]),
        ("Vxxx", &[1.0, 1.0, 1.0, 1.0]),
        ("xxxV", &[0.0, 0.0, 0.0, 1.0]),
        ("xxxx", &[0.0, 0.0, 0.0, 0.0]), // c = 0
        ("VVVV", &[1.0, 1.0, 1.0, 1.0]), // c = n
        ("AAAA", &[0.0, 0.0, 0.0, 0.0]), // right answers, never verified
    ];
    for (samples, want) in cases {
        let correct: Vec<bool> = verdicts(samples).iter().map(|v| v.verified).collect();
        for (k, &w) in (1..=4).zip(want.iter()) {
            assert_eq!(first_k(&correct, k), w, "{samples} at k={k}");
            assert_eq!(Estimator::FirstK.pass(&correct, k), w);
        }
    }
}

/// Every placement of `c` correct samples among `n`, as bools.
fn placements(n: usize, c: usize) -> Vec<Vec<bool>> {
    (0u32..1 << n)
        .filter(|m| m.count_ones() as usize == c)
        .map(|m| (0..n).map(|i| m & (1 << i) != 0).collect())
        .collect()
}

#[test]
fn first_k_is_at_least_unbiased_when_correct_samples_come_first_and_equals_it_over_all_orders() {
    for n in 1..=8 {
        for c in 0..=n {
            let first: Vec<bool> = (0..n).map(|i| i < c).collect();
            let last: Vec<bool> = (0..n).map(|i| i >= n - c).collect();
            let all = placements(n, c);
            for k in 1..=n {
                let unbiased = pass_at_k(n, c, k);
                assert!(first_k(&first, k) >= unbiased, "n={n} c={c} k={k}");
                assert!(first_k(&last, k) <= unbiased, "n={n} c={c} k={k}");
                let mean = all.iter().map(|p| first_k(p, k)).sum::<f64>() / all.len() as f64;
                assert!(
                    (mean - unbiased).abs() < 1e-12,
                    "n={n} c={c} k={k}: first-k over all orders {mean}, unbiased {unbiased}"
                );
                assert_close(Estimator::Unbiased.pass(&first, k), unbiased, "estimator");
            }
        }
    }
}

#[test]
fn ks_are_powers_of_two_then_n() {
    assert_eq!(ks(1), [1]);
    assert_eq!(ks(2), [1, 2]);
    assert_eq!(ks(8), [1, 2, 4, 8]);
    assert_eq!(ks(6), [1, 2, 4, 6]);
    assert_eq!(ks(128).len(), 8);
}

// ---- breakdowns ------------------------------------------------------------------------------

/// Four problems: op 2 (zoo, forward), op 3 (teacher, forward), op 12 (zoo, reverse) and op 30 (teacher,
/// reverse; outside every bucket), four samples each, and one greedy decode each.
fn constructed(estimator: Estimator) -> ModelReport {
    let keys = [
        key(2, "zoo", "forward"),
        key(3, "teacher", "forward"),
        key(12, "zoo", "reverse"),
        key(30, "teacher", "reverse"),
    ];
    let sampled: Vec<Vec<Verdict>> = ["VVxx", "Axxx", "xxxV", "AAAA"]
        .iter()
        .map(|s| verdicts(s))
        .collect();
    let greedy: Vec<Verdict> = verdicts("VAxA");
    ModelReport::build(
        "pretrain",
        "pretrain.model",
        &keys,
        &buckets(),
        &ks(4),
        estimator,
        &sampled,
        Some(&greedy),
    )
}

/// (split, name, problems, verified pass@1,2,4, answer pass@1,2,4, hacking, process, greedy verified,
/// greedy answer)
type Row = (
    &'static str,
    &'static str,
    usize,
    [f64; 3],
    [f64; 3],
    f64,
    f64,
    f64,
    f64,
);

#[test]
fn bucket_context_and_mode_splits_hold_the_hand_computed_numbers() {
    let m = constructed(Estimator::Unbiased);
    let cell = |split: &str, name: &str| -> &Cell {
        match split {
            "overall" => &m.overall,
            "op" => &m.per_op[&name.parse::<u32>().unwrap()],
            "bucket" => &m.per_bucket[name],
            "context" => &m.per_context[name],
            "mode" => &m.per_mode[name],
            _ => unreachable!(),
        }
    };
    // Per problem: op 2 "VVxx" verified 1/2, 5/6, 1; op 3 "Axxx" answer 1/4, 1/2, 1; op 12 "xxxV" 1/4, 1/2, 1;
    // op 30 "AAAA" answer 1, 1, 1. Greedy V, A, x, A.
    #[rustfmt::skip]
    let cases: &[Row] = &[
        ("overall", "", 4, [0.75 / 4.0, (5.0 / 6.0 + 0.5) / 4.0, 0.5], [(0.5 + 0.25 + 0.25 + 1.0) / 4.0, (5.0 / 6.0 + 0.5 + 0.5 + 1.0) / 4.0, 1.0], 5.0 / 16.0, 5.5 / 16.0, 0.25, 0.75),
        ("op", "2", 1, [0.5, 5.0 / 6.0, 1.0], [0.5, 5.0 / 6.0, 1.0], 0.0, 0.5, 1.0, 1.0),
        ("op", "30", 1, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], 1.0, 0.5, 0.0, 1.0),
        ("bucket", "in-distribution", 2, [0.25, 5.0 / 12.0, 0.5], [0.375, 2.0 / 3.0, 1.0], 1.0 / 8.0, 2.5 / 8.0, 0.5, 1.0),
        ("bucket", "ood-edge", 1, [0.25, 0.5, 1.0], [0.25, 0.5, 1.0], 0.0, 0.25, 0.0, 0.0),
        ("context", "zoo", 2, [0.375, 2.0 / 3.0, 1.0], [0.375, 2.0 / 3.0, 1.0], 0.0, 3.0 / 8.0, 0.5, 0.5),
        ("context", "teacher", 2, [0.0, 0.0, 0.0], [0.625, 0.75, 1.0], 5.0 / 8.0, 2.5 / 8.0, 0.0, 1.0),
        ("mode", "forward", 2, [0.25, 5.0 / 12.0, 0.5], [0.375, 2.0 / 3.0, 1.0], 1.0 / 8.0, 2.5 / 8.0, 0.5, 1.0),
        ("mode", "reverse", 2, [0.125, 0.25, 0.5], [0.625, 0.75, 1.0], 0.5, 3.0 / 8.0, 0.0, 0.5),
    ];
    for &(split, name, problems, verified, answer, hacking, process, gv, ga) in cases {
        let c = cell(split, name);
        let what = format!("{split} {name}");
        assert_eq!(c.problems, problems, "{what}");
        assert_eq!(c.samples, problems * 4, "{what}");
        for j in 0..3 {
            assert_close(
                c.verified_pass[j],
                verified[j],
                &format!("{what} verified pass@{}", 1 << j),
            );
            assert_close(
                c.answer_pass[j],
                answer[j],
                &format!("{what} answer pass@{}", 1 << j),
            );
        }
        assert_close(c.hacking_rate, hacking, &format!("{what} hacking"));
        // The hacking rate is answer pass@1 minus verified pass@1.
        assert_close(
            c.hacking_rate,
            c.answer_pass[0] - c.verified_pass[0],
            &format!("{what} identity"),
        );
        assert_close(c.process_mean, process, &format!("{what} process"));
        let g = c.greedy.as_ref().expect("greedy decoded");
        assert_close(g.verified_pass1, gv, &format!("{what} greedy verified"));
        assert_close(g.answer_pass1, ga, &format!("{what} greedy answer"));
        assert_close(g.hacking_rate, ga - gv, &format!("{what} greedy hacking"));
    }
    // Op 30 is in no bucket: the buckets hold 3 of the 4 problems, and only the two named.
    assert_eq!(
        m.per_bucket.keys().collect::<Vec<_>>(),
        ["in-distribution", "ood-edge"]
    );
    assert_eq!(m.per_bucket.values().map(|c| c.problems).sum::<usize>(), 3);
    assert_eq!(m.per_op.len(), 4);
}

#[test]
fn first_k_reports_the_first_samples_and_the_unbiased_estimator_their_average() {
    let u = constructed(Estimator::Unbiased);
    let f = constructed(Estimator::FirstK);
    // op 2 "VVxx": both samples first, first-k pass@1 = 1 against 1/2; op 12 "xxxV": 0 against 1/4.
    assert_eq!(f.per_op[&2].verified_pass, [1.0, 1.0, 1.0]);
    assert_eq!(f.per_op[&12].verified_pass, [0.0, 0.0, 1.0]);
    assert_eq!(
        f.per_bucket["in-distribution"].verified_pass,
        [0.5, 0.5, 0.5]
    );
    assert_close(
        u.per_bucket["in-distribution"].verified_pass[0],
        0.25,
        "unbiased",
    );
    // pass@n is the same either way: any sample at all.
    assert_close(
        f.overall.verified_pass[2],
        u.overall.verified_pass[2],
        "pass@n",
    );
    // The rest does not depend on the estimator.
    assert_eq!(f.overall.hacking_rate, u.overall.hacking_rate);
    assert_eq!(f.overall.greedy, u.overall.greedy);
}

#[test]
fn greedy_sits_beside_sampled_and_is_absent_when_not_decoded() {
    let keys = [key(2, "zoo", "forward"), key(3, "zoo", "forward")];
    let sampled = vec![verdicts("xxxx"), verdicts("AAxx")];
    let with = ModelReport::build(
        "rl",
        "rl.model",
        &keys,
        &buckets(),
        &ks(4),
        Estimator::Unbiased,
        &sampled,
        Some(&verdicts("Vs")),
    );
    // Sampling never verifies, greedy always does: the two numbers are reported side by side.
    assert_eq!(with.overall.verified_pass, [0.0, 0.0, 0.0]);
    let g = with.overall.greedy.as_ref().unwrap();
    assert_eq!(
        (g.verified_pass1, g.answer_pass1, g.strict_pass1),
        (1.0, 1.0, 0.5)
    );
    assert_eq!(g.hacking_rate, 0.0);
    assert_close(with.overall.hacking_rate, 2.0 / 8.0, "sampled hacking");
    let without = ModelReport::build(
        "rl",
        "rl.model",
        &keys,
        &buckets(),
        &ks(4),
        Estimator::Unbiased,
        &sampled,
        None,
    );
    assert!(without.overall.greedy.is_none() && without.per_op[&2].greedy.is_none());
    let text = serde_json::to_string(&without).unwrap();
    assert!(!text.contains("greedy"), "{text}");
}

#[test]
fn models_are_named_by_their_stage_unless_two_share_one() {
    let s = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        model_names(&s(&[
            ("pretrain", "model"),
            ("midtrain", "model"),
            ("rl", "model")
        ])),
        ["pretrain", "midtrain", "rl"]
    );
    assert_eq!(
        model_names(&s(&[
            ("pretrain", "model"),
            ("rl", "model"),
            ("rl", "best")
        ])),
        ["pretrain", "rl.model", "rl.best"]
    );
}

// ---- reports from run directories --------------------------------------------------------------

/// Two problems (op 2 and op 12), two samples each, models `pretrain` and `rl`, with greedy.
fn two_model_report(pretrain: [&str; 2], rl: [&str; 2], greedy: [&str; 2]) -> report::EvalReport {
    eval_report(
        &[key(2, "zoo", "forward"), key(12, "zoo", "forward")],
        2,
        &[
            ("pretrain", &pretrain, Some(greedy[0])),
            ("rl", &rl, Some(greedy[1])),
        ],
        "aaaa",
    )
}

fn summarize(dirs: &[PathBuf], stages: &[&str]) -> anyhow::Result<report::Summary> {
    let stages: Vec<String> = stages.iter().map(|s| s.to_string()).collect();
    report::runs::summarize(dirs, &stages).map(|(s, _)| s)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_report_from_a_fixture_run_holds_the_numbers_and_draws_svg_and_png() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = two_model_report(["Vx", "xx"], ["VV", "Ax"], ["VV", "Vx"]);
    write_run(
        &run,
        0,
        &[
            ("data", Some("{\"rows\": 3}".into()), true),
            ("eval", json(&r), true),
        ],
    );
    let summary = summarize(std::slice::from_ref(&run), &[]).unwrap();
    assert_eq!(
        summary.stages.len(),
        1,
        "the data stage is not an evaluation"
    );
    let st = &summary.stages[0];
    assert_eq!((st.stage.as_str(), st.runs), ("eval", 1));
    let rl = &st.models[1];
    assert_eq!(rl.model, "rl");
    assert_eq!(rl.per_op[&2].verified_pass[0].mean, 1.0);
    assert_eq!(rl.per_op[&2].verified_pass[0].std, None);
    assert_eq!(rl.overall.answer_pass[0].mean, 0.75);
    assert_eq!(rl.overall.hacking_rate.mean, 0.25);
    assert_eq!(rl.overall.greedy.as_ref().unwrap().verified_pass1.mean, 0.5);

    let out = tmp.path().join("report");
    let files = report::write_report(&out, &summary, true).unwrap();
    let md = String::from_utf8(read(&out.join("report.md"))).unwrap();
    // Headline: greedy pass@1, pass@1, pass@2, answer pass@1 ..., no ± for one run.
    assert!(
        md.contains("| `rl` | 0.500 | 0.500 | 0.500 | 0.500 | 0.750 | 1.000 | 0.625 | 0.250 |"),
        "{md}"
    );
    assert!(
        md.contains("### Verified pass@2, per op and bucket"),
        "{md}"
    );
    assert!(
        md.contains("| `pretrain` | 1.000 | 0.000 | 1.000 | 0.000 |"),
        "{md}"
    );
    assert!(!md.contains('±'), "{md}");
    let again: report::Summary = serde_json::from_slice(&read(&out.join("report.json"))).unwrap();
    assert_eq!(again, summary);

    // pass@k per bucket, and by op at k = 1, at k = 2 and greedy: each as SVG and PNG.
    for name in [
        "pass-at-k-in-distribution",
        "pass-at-k-ood-edge",
        "op-pass1",
        "op-pass2",
        "op-greedy-pass1",
    ] {
        let svg = out.join(format!("plots/eval/{name}.svg"));
        let png = out.join(format!("plots/eval/{name}.png"));
        assert!(files.contains(&svg) && files.contains(&png), "{name}");
        let text = String::from_utf8(read(&svg)).unwrap();
        assert!(text.starts_with("<svg"), "{name}");
        for want in ["eval: verified pass@", "pretrain", "rl", "model"] {
            assert!(text.contains(want), "{name}.svg lacks {want:?}");
        }
        if name.starts_with("op-") {
            assert!(
                text.contains("in-distribution") && text.contains("ood-edge"),
                "{name}: bucket bands"
            );
            assert!(
                text.contains("op (operations per problem)"),
                "{name}: axis label"
            );
        }
        let bytes = read(&png);
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}.png magic");
        assert_png_has_text(&bytes, name);
        assert!(md.contains(&format!("(plots/eval/{name}.svg)")), "{md}");
    }
}

/// The legend column right of the chart holds only text and short coloured lines: dark grey pixels
/// there are glyphs, so the font rendered.
fn assert_png_has_text(png_bytes: &[u8], name: &str) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width as usize, info.height as usize);
    assert_eq!((w, h), (960, 540));
    let dark = (0..h)
        .flat_map(|y| (w - 200..w).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let p = &buf[(y * w + x) * 3..][..3];
            p.iter().all(|&c| c < 80)
        })
        .count();
    assert!(
        dark > 50,
        "{name}.png: {dark} dark pixels in the legend: no text drawn"
    );
}

#[test]
fn several_runs_give_mean_and_sample_std_of_the_per_run_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    // pretrain's verified pass@1 per run, overall: (1/2 + 0)/2, (1 + 0)/2, (1 + 1/2)/2 = 0.25, 0.5, 0.75.
    let runs = [
        two_model_report(["Vx", "xx"], ["VV", "xx"], ["Vx", "Vx"]),
        two_model_report(["VV", "xx"], ["VV", "Vx"], ["Vx", "VV"]),
        two_model_report(["VV", "Vx"], ["VV", "VV"], ["VV", "VV"]),
    ];
    let dirs: Vec<PathBuf> = (0..3)
        .map(|s| tmp.path().join(format!("seed-{s}")))
        .collect();
    for (s, (dir, r)) in dirs.iter().zip(&runs).enumerate() {
        write_run(dir, s as u64, &[("eval", json(r), true)]);
    }
    let summary = summarize(&dirs, &[]).unwrap();
    let st = &summary.stages[0];
    assert_eq!(st.runs, 3);
    assert_eq!(
        summary.runs.iter().map(|r| r.seed).collect::<Vec<_>>(),
        [Some(0), Some(1), Some(2)]
    );

    // By hand from the per-run numbers.
    let by_hand = |values: &[f64]| {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        (mean, std)
    };
    let p = &st.models[0];
    let check = |s: &Stat, values: &[f64], what: &str| {
        let (mean, std) = by_hand(values);
        assert_close(s.mean, mean, &format!("{what} mean"));
        assert_close(s.std.unwrap(), std, &format!("{what} std"));
        assert_eq!(s.values, values, "{what} values");
    };
    check(
        &p.overall.verified_pass[0],
        &[0.25, 0.5, 0.75],
        "pretrain pass@1",
    );
    assert_close(
        p.overall.verified_pass[0].std.unwrap(),
        0.25,
        "0.25 exactly",
    );
    check(
        &p.overall.verified_pass[1],
        &[0.5, 0.5, 1.0],
        "pretrain pass@2",
    );
    check(
        &p.per_op[&2].verified_pass[0],
        &[0.5, 1.0, 1.0],
        "pretrain op 2",
    );
    check(
        &p.per_bucket["ood-edge"].verified_pass[0],
        &[0.0, 0.0, 0.5],
        "pretrain ood-edge",
    );
    check(
        &p.overall.greedy.as_ref().unwrap().verified_pass1,
        &[0.5, 0.5, 1.0],
        "pretrain greedy",
    );
    // Every aggregated number is the mean of the per-run reports' number.
    for (j, s) in st.models[1].overall.answer_pass.iter().enumerate() {
        let values: Vec<f64> = runs
            .iter()
            .map(|r| r.models[1].overall.answer_pass[j])
            .collect();
        check(s, &values, "rl answer pass@k");
    }

    let out = tmp.path().join("report");
    report::write_report(&out, &summary, true).unwrap();
    let md = String::from_utf8(read(&out.join("report.md"))).unwrap();
    assert!(md.contains("3 runs:") && md.contains("n = 3"), "{md}");
    assert!(
        md.contains("| `pretrain` | 0.667 ± 0.289 | 0.500 ± 0.250 | 0.667 ± 0.289 |"),
        "{md}"
    );
    let svg = String::from_utf8(read(&out.join("plots/eval/op-pass1.svg"))).unwrap();
    assert!(
        svg.contains("n = 3 runs"),
        "the plot says what the error bars are"
    );
}

// ---- inputs that cannot be reported ----------------------------------------------------------

#[track_caller]
fn fails(result: anyhow::Result<report::Summary>, wants: &[&str]) {
    let err = format!("{:#}", result.expect_err("should fail"));
    for w in wants {
        assert!(err.contains(w), "error lacks {w:?}:\n{err}");
    }
}

#[test]
fn runs_that_evaluated_different_things_are_not_aggregated() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let base = two_model_report(["Vx", "xx"], ["VV", "Ax"], ["VV", "Vx"]);
    write_run(&a, 0, &[("eval", json(&base), true)]);
    // (change, words the error must hold)
    type Change = fn(&mut report::EvalReport);
    let cases: &[(Change, &[&str])] = &[
        (
            |r| r.eval_set.sha256 = "bbbb".into(),
            &["different evaluation sets", "sha256 aaaa", "sha256 bbbb"],
        ),
        (
            |r| r.eval_set.problems = 90,
            &["different evaluation sets", "90 problems"],
        ),
        (
            |r| r.settings.samples = 4,
            &["different settings", "samples = 2", "samples = 4"],
        ),
        (
            |r| r.settings.temperature = 0.7,
            &["different settings", "temperature = 0.7"],
        ),
        (
            |r| r.settings.estimator = report::Estimator::FirstK,
            &["different settings", "estimator = \"first-k\""],
        ),
        (
            |r| r.settings.max_new_tokens = 32,
            &[
                "different settings",
                "max_new_tokens = 64",
                "max_new_tokens = 32",
            ],
        ),
        (
            |r| r.buckets.pop().map(drop).unwrap_or(()),
            &["different buckets"],
        ),
        (
            |r| r.models.truncate(1),
            &["different models", "pretrain, rl"],
        ),
    ];
    for (i, (change, wants)) in cases.iter().enumerate() {
        let b = tmp.path().join(format!("b{i}"));
        let mut other = base.clone();
        change(&mut other);
        write_run(&b, 1, &[("eval", json(&other), true)]);
        let a_file = a
            .join("stages/eval/out/report/report.json")
            .display()
            .to_string();
        let b_file = b
            .join("stages/eval/out/report/report.json")
            .display()
            .to_string();
        let mut wants = wants.to_vec();
        wants.extend(["cannot aggregate stage `eval`", &a_file, &b_file]);
        fails(summarize(&[a.clone(), b], &[]), &wants);
    }
}

#[test]
fn empty_unfinished_missing_and_foreign_inputs_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let good = two_model_report(["Vx", "xx"], ["VV", "Ax"], ["VV", "Vx"]);
    let dir = |name: &str| tmp.path().join(name);

    // Not a run directory at all.
    std::fs::create_dir_all(dir("nothing")).unwrap();
    fails(
        summarize(&[dir("nothing")], &[]),
        &["nothing", "is not a run directory", "stages/"],
    );

    // An empty run: the data stage finished, the eval stage did not.
    write_run(
        &dir("empty"),
        0,
        &[
            ("data", Some("{}".into()), true),
            ("eval", json(&good), false),
        ],
    );
    fails(
        summarize(&[dir("empty")], &[]),
        &[
            "empty",
            "has no finished eval stage",
            "eval (not finished: no DONE)",
            "data (finished, not an evaluation)",
        ],
    );
    fails(
        summarize(&[dir("empty")], &["eval"]),
        &["stage `eval`", "has not finished", "DONE"],
    );

    // A missing stage: named with --stage, or found in one run and not the other.
    write_run(
        &dir("one"),
        0,
        &[
            ("eval", json(&good), true),
            ("eval-pass-k", json(&good), true),
        ],
    );
    write_run(&dir("two"), 1, &[("eval", json(&good), true)]);
    fails(
        summarize(&[dir("one"), dir("two")], &["eval-pass-k"]),
        &["missing stage", "two", "eval-pass-k", "its stages: eval"],
    );
    fails(
        summarize(&[dir("one"), dir("two")], &[]),
        &["missing stage", "eval-pass-k", "one", "two"],
    );
    // ... while naming the stage they share works.
    assert_eq!(
        summarize(&[dir("one"), dir("two")], &["eval"])
            .unwrap()
            .stages[0]
            .runs,
        2
    );

    // A stage that is not an evaluation, named with --stage.
    fails(
        summarize(&[dir("empty")], &["data"]),
        &["stage `data`", "not an eval report", "report.json"],
    );

    // A report of the older, unmarked format, and one of a newer version.
    let mut old = serde_json::to_value(&good).unwrap();
    old.as_object_mut().unwrap().remove("format");
    old.as_object_mut().unwrap().remove("version");
    write_run(&dir("old"), 0, &[("eval", Some(old.to_string()), true)]);
    fails(
        summarize(&[dir("old")], &[]),
        &[
            "old/stages/eval/out/report/report.json",
            "older format",
            "--force",
        ],
    );
    let mut newer = serde_json::to_value(&good).unwrap();
    newer["version"] = 99.into();
    write_run(&dir("newer"), 0, &[("eval", Some(newer.to_string()), true)]);
    fails(
        summarize(&[dir("newer")], &["eval"]),
        &[
            "newer/stages/eval/out/report/report.json",
            "format version 99",
            "reads version 2",
        ],
    );
}
