//! `report.md`: a headline table per eval stage with the models side by side, per-op and per-bucket
//! tables, the plots, then one detailed table per model.

use std::fmt::Write;

use crate::eval::Estimator;
use crate::plot::Plot;
use crate::summary::{StageSummary, Stat, StatCell, Summary};

/// `0.123`, or `0.123 ± 0.045` over several runs.
pub fn fmt(s: &Stat) -> String {
    match s.std {
        Some(sd) => format!("{:.3} ± {:.3}", s.mean, sd),
        None => format!("{:.3}", s.mean),
    }
}

/// The whole `report.md`; `plots` are the figures written beside it (paths relative to it).
pub fn render(summary: &Summary, plots: &[Plot]) -> String {
    let mut s = String::from("# Evaluation report\n\n");
    let n = summary.stages.first().map_or(1, |st| st.runs);
    if !summary.runs.is_empty() {
        let runs: Vec<String> = summary
            .runs
            .iter()
            .map(|r| {
                let mut d = format!("`{}`", r.dir);
                match (&r.pipeline, r.seed) {
                    (Some(p), Some(seed)) => write!(d, " (pipeline `{p}`, seed {seed})").unwrap(),
                    (Some(p), None) => write!(d, " (pipeline `{p}`)").unwrap(),
                    _ => {}
                }
                d
            })
            .collect();
        if n > 1 {
            writeln!(
                s,
                "{} runs: {}.\n\nEvery number is the mean ± the sample standard deviation over the n = {} runs \
                 (error bars in the plots: ± 1 standard deviation).\n",
                n,
                runs.join(", "),
                n
            )
            .unwrap();
        } else {
            writeln!(s, "Run: {}.\n", runs.join(", ")).unwrap();
        }
    }
    s += "verified = VerifiedCorrect (every gold step and the answer right; extra correct steps allowed), the \
          paper's metric; answer = the answer alone; greedy = one greedy decode per problem; process = mean \
          process accuracy R_pv; hacking = share of samples whose answer is right but which are not \
          VerifiedCorrect (= answer pass@1 − verified pass@1).\n";
    for st in &summary.stages {
        stage(&mut s, st, plots);
    }
    s
}

fn stage(s: &mut String, st: &StageSummary, plots: &[Plot]) {
    let set = &st.eval_set;
    let cfg = &st.settings;
    let sampled_is_greedy = cfg.temperature == 0.0;
    writeln!(
        s,
        "\n## Stage `{}`\n\nEvaluation set `{}` ({}): {} problems, sha256 `{}`. {}",
        st.stage,
        set.dataset,
        set.file,
        set.problems,
        short(&set.sha256),
        if sampled_is_greedy {
            format!(
                "Greedy decoding, one completion per problem (at most {} new tokens).",
                cfg.max_new_tokens
            )
        } else {
            format!(
                "{} sample(s) per problem at temperature {} (top_p {}, top_k {}, at most {} new tokens); pass@k by \
                 the {} estimator{}.",
                cfg.samples,
                cfg.temperature,
                cfg.top_p,
                cfg.top_k,
                cfg.max_new_tokens,
                match cfg.estimator {
                    Estimator::Unbiased => "unbiased",
                    Estimator::FirstK => "first-k (any of the first k samples)",
                },
                if cfg.greedy {
                    "; greedy pass@1 from one more, greedy, decode per problem"
                } else {
                    ""
                }
            )
        }
    )
    .unwrap();
    let kmax = st.max_k();
    let jmax = st.ks.len() - 1;
    let greedy_col = cfg.greedy && !sampled_is_greedy;

    // Headline.
    let mut head = vec!["model".to_string()];
    if greedy_col {
        head.push("greedy pass@1".into());
    }
    head.push(if sampled_is_greedy {
        "verified pass@1 (greedy)".into()
    } else {
        "pass@1".into()
    });
    if kmax > 1 {
        head.push(format!("pass@{kmax}"));
    }
    if greedy_col {
        head.push("greedy answer pass@1".into());
    }
    head.push("answer pass@1".into());
    if kmax > 1 {
        head.push(format!("answer pass@{kmax}"));
    }
    head.extend(["process".into(), "hacking".into()]);
    s.push('\n');
    table_head(s, &head);
    for m in &st.models {
        let c = &m.overall;
        let mut row = vec![format!("`{}`", m.model)];
        if greedy_col {
            row.push(
                c.greedy
                    .as_ref()
                    .map_or("".into(), |g| fmt(&g.verified_pass1)),
            );
        }
        row.push(fmt(&c.verified_pass[0]));
        if kmax > 1 {
            row.push(fmt(&c.verified_pass[jmax]));
        }
        if greedy_col {
            row.push(
                c.greedy
                    .as_ref()
                    .map_or("".into(), |g| fmt(&g.answer_pass1)),
            );
        }
        row.push(fmt(&c.answer_pass[0]));
        if kmax > 1 {
            row.push(fmt(&c.answer_pass[jmax]));
        }
        row.push(fmt(&c.process_mean));
        row.push(fmt(&c.hacking_rate));
        table_row(s, &row);
    }

    // Per op and bucket, models side by side, for each headline measure.
    let mut measures: Vec<(String, Measure)> = Vec::new();
    if greedy_col {
        measures.push((
            "Greedy verified pass@1".into(),
            Box::new(|c: &StatCell| c.greedy.as_ref().map(|g| &g.verified_pass1)),
        ));
    }
    measures.push((
        if sampled_is_greedy {
            "Verified pass@1 (greedy decoding)".into()
        } else {
            "Sampled verified pass@1".into()
        },
        Box::new(|c: &StatCell| c.verified_pass.first()),
    ));
    if kmax > 1 {
        measures.push((
            format!("Verified pass@{kmax}"),
            Box::new(move |c: &StatCell| c.verified_pass.get(jmax)),
        ));
    }
    let ops: Vec<u32> = st
        .models
        .first()
        .map(|m| m.per_op.keys().copied().collect())
        .unwrap_or_default();
    let buckets: Vec<_> = st
        .buckets
        .iter()
        .filter(|b| st.models.iter().any(|m| m.per_bucket.contains_key(&b.name)))
        .collect();
    for (title, get) in &measures {
        writeln!(s, "\n### {title}, per op and bucket\n").unwrap();
        let mut head = vec!["model".to_string()];
        head.extend(ops.iter().map(|o| format!("op {o}")));
        head.extend(
            buckets
                .iter()
                .map(|b| format!("{} ({}-{})", b.name, b.ops[0], b.ops[1])),
        );
        table_head(s, &head);
        for m in &st.models {
            let mut row = vec![format!("`{}`", m.model)];
            row.extend(
                ops.iter()
                    .map(|o| m.per_op.get(o).and_then(get).map_or("".into(), fmt)),
            );
            row.extend(buckets.iter().map(|b| {
                m.per_bucket
                    .get(&b.name)
                    .and_then(get)
                    .map_or("".into(), fmt)
            }));
            table_row(s, &row);
        }
    }

    let mine: Vec<&Plot> = plots.iter().filter(|p| p.stage == st.stage).collect();
    if !mine.is_empty() {
        s.push_str("\n### Plots\n\n");
        for p in mine {
            writeln!(s, "![{}]({})\n", p.title, p.svg).unwrap();
        }
        writeln!(
            s,
            "PNG versions beside each SVG{}.",
            if st.ks.len() < 2 {
                "; no pass@k-against-k plot: one sample per problem"
            } else {
                ""
            }
        )
        .unwrap();
    }

    // Per model, everything.
    for m in &st.models {
        writeln!(s, "\n### `{}` in detail (from `{}`)\n", m.model, m.source).unwrap();
        let mut head = vec!["".to_string(), "problems".into()];
        if greedy_col {
            head.extend([
                "greedy pass@1".into(),
                "greedy answer pass@1".into(),
                "greedy hacking".into(),
            ]);
        }
        head.extend(st.ks.iter().map(|k| format!("verified pass@{k}")));
        head.extend(st.ks.iter().map(|k| format!("answer pass@{k}")));
        head.extend([
            "strict pass@1".into(),
            "process".into(),
            "hacking".into(),
            "finished".into(),
        ]);
        table_head(s, &head);
        let row = |s: &mut String, name: String, c: &StatCell| {
            let mut r = vec![name, c.problems.to_string()];
            if greedy_col {
                match &c.greedy {
                    Some(g) => r.extend([
                        fmt(&g.verified_pass1),
                        fmt(&g.answer_pass1),
                        fmt(&g.hacking_rate),
                    ]),
                    None => r.extend(["".into(), "".into(), "".into()]),
                }
            }
            r.extend(c.verified_pass.iter().map(fmt));
            r.extend(c.answer_pass.iter().map(fmt));
            r.extend([
                fmt(&c.strict_pass1),
                fmt(&c.process_mean),
                fmt(&c.hacking_rate),
                fmt(&c.finished),
            ]);
            table_row(s, &r);
        };
        row(s, "**all**".into(), &m.overall);
        for (op, c) in &m.per_op {
            row(s, format!("op {op}"), c);
        }
        for b in &st.buckets {
            if let Some(c) = m.per_bucket.get(&b.name) {
                row(s, format!("{} ({}-{})", b.name, b.ops[0], b.ops[1]), c);
            }
        }
        for (name, c) in &m.per_context {
            row(s, format!("context {name}"), c);
        }
        for (name, c) in &m.per_mode {
            row(s, format!("mode {name}"), c);
        }
    }
}

/// One number of a cell, where the cell has it.
type Measure = Box<dyn Fn(&StatCell) -> Option<&Stat>>;

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(16)]
}

fn table_head(s: &mut String, head: &[String]) {
    writeln!(s, "| {} |", head.join(" | ")).unwrap();
    writeln!(s, "|{}", "---|".repeat(head.len())).unwrap();
}

fn table_row(s: &mut String, row: &[String]) {
    writeln!(s, "| {} |", row.join(" | ")).unwrap();
}
