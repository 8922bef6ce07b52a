//! Perturbed completions get the right verdicts (issue 3's list), in both modes, over many problems.

use task::verify::{
    GoldGraph, RewardConfig, Score, VerifyOptions, answers_equal, extract_answer, score,
};
use task::{Context, Mode, Problem, ProblemSpec, TaskConfig, generate, text};

fn problems() -> Vec<Problem> {
    let cfg = TaskConfig::paper();
    let mut out = Vec::new();
    for (i, op) in [2u32, 3, 4, 5, 7, 9, 12, 15, 18, 20].iter().enumerate() {
        for mode in Mode::ALL {
            for k in 0..2u64 {
                let spec = ProblemSpec {
                    op: *op,
                    context: Context::ALL[(i + k as usize) % 3],
                    mode,
                    d: 2,
                };
                out.push(generate(&cfg, &spec, 77, i as u64 * 10 + k).unwrap());
            }
        }
    }
    out
}

const ON: VerifyOptions = VerifyOptions {
    check_arithmetic: true,
    modulus: None,
};
const OFF: VerifyOptions = VerifyOptions {
    check_arithmetic: false,
    modulus: None,
};

fn judge(p: &Problem, completion: &str, opts: &VerifyOptions) -> Score {
    let gold = GoldGraph::from_solution(&p.solution).unwrap();
    score(&gold, completion, opts)
}

/// Byte ranges of the `Define ...` steps (the last one ends where the equation tail or `Answer:` starts).
fn steps(sol: &str) -> Vec<(usize, usize)> {
    let starts: Vec<usize> = sol.match_indices("Define ").map(|(i, _)| i).collect();
    let end = sol
        .find("We know")
        .or_else(|| sol.rfind("Answer:"))
        .unwrap();
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            (
                s,
                if k + 1 < starts.len() {
                    starts[k + 1]
                } else {
                    end
                },
            )
        })
        .collect()
}

/// The letter a step defines.
fn letter_of(step: &str) -> char {
    let i = step.find(" as ").unwrap() + 4;
    step[i..].chars().next().unwrap()
}

fn is_letter_at(s: &[u8], i: usize) -> bool {
    s[i].is_ascii_alphabetic()
        && (i == 0
            || !s[i - 1].is_ascii_alphanumeric()
                && s[i - 1] != b'-'
                && s[i - 1] >= 0x20
                && s[i - 1] < 0x80)
        && (i + 1 == s.len()
            || !s[i + 1].is_ascii_alphanumeric()
                && s[i + 1] < 0x80
                && s[i + 1] != b'-'
                && s[i + 1] != b'\'')
}

/// Applies `f` to every single-letter token of `s` (whole tokens only).
fn map_letters(s: &str, f: impl Fn(u8) -> u8) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    for i in 0..b.len() {
        out.push(if is_letter_at(b, i) { f(b[i]) } else { b[i] });
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn gold_is_perfect_in_both_formats() {
    for p in problems() {
        for c in [p.solution.clone(), text::target_completion(&p.solution)] {
            let s = judge(&p, &c, &ON);
            assert!(
                s.verified && s.strict && s.outcome && s.process == 1.0,
                "{s:?}\n{c}"
            );
            for r in [
                RewardConfig::OUTCOME,
                RewardConfig::PROCESS,
                RewardConfig::PROCESS_HALF,
                RewardConfig::STRICT,
            ] {
                assert_eq!(r.reward(&s), 1.0);
            }
        }
    }
}

#[test]
fn changed_intermediate_value() {
    for p in problems() {
        let st = steps(&p.solution);
        if st.len() < 2 {
            continue;
        }
        // The first computed step's final value `= v.` becomes `= v+1.` (`x` becomes `x + 1`).
        let (a, b) = *st
            .iter()
            .find(|(a, b)| p.solution[*a..*b].contains(" = "))
            .unwrap();
        let step = &p.solution[a..b];
        let dot = step.rfind(". ").unwrap();
        let eq = step[..dot].rfind(" = ").unwrap() + 3;
        let old = &step[eq..dot];
        let new = old
            .parse::<i64>()
            .map_or_else(|_| format!("{old} + 1"), |v| (v + 1).to_string());
        let c = format!(
            "{}{}{}{}",
            &p.solution[..a + eq],
            new,
            &step[dot..],
            &p.solution[b..]
        );
        let s = judge(&p, &c, &ON);
        assert!(
            !s.verified && !s.strict && s.value_mismatch >= 1 && s.process < 1.0,
            "{s:?}\n{c}"
        );
        assert!(s.outcome, "the answer is untouched");
        assert!(RewardConfig::PROCESS.reward(&s) < 1.0 && RewardConfig::STRICT.reward(&s) == 0.0);
        assert_eq!(
            RewardConfig::OUTCOME.reward(&s),
            1.0,
            "outcome-only cannot see it (reward hacking)"
        );
    }
}

#[test]
fn changed_answer() {
    for p in problems() {
        let c = p.solution.replace(
            &format!("Answer: {}.", p.answer),
            &format!("Answer: {}.", p.answer + 1),
        );
        let s = judge(&p, &c, &ON);
        assert!(
            !s.outcome && !s.verified && s.answer_mismatch && s.value_mismatch == 0,
            "{s:?}"
        );
        for r in [
            RewardConfig::OUTCOME,
            RewardConfig::PROCESS,
            RewardConfig::STRICT,
        ] {
            assert_eq!(r.reward(&s), 0.0, "a wrong answer always gets 0");
        }
    }
}

#[test]
fn deleted_step() {
    for p in problems() {
        let st = steps(&p.solution);
        let (a, b) = st[0];
        let c = format!("{}{}", &p.solution[..a], &p.solution[b..]);
        let s = judge(&p, &c, &ON);
        assert!(
            s.missing >= 1 && !s.verified && !s.strict && s.process < 1.0,
            "{s:?}\n{c}"
        );
    }
}

#[test]
fn swapped_dependency() {
    let mut tested = 0;
    for p in problems() {
        let sol = &p.solution;
        let st = steps(sol);
        let letters: Vec<char> = st.iter().map(|&(a, b)| letter_of(&sol[a..b])).collect();
        // In the last step, replace the first letter read in the first assignment by an earlier step's letter that
        // the step does not read.
        let (a, b) = *st.last().unwrap();
        let step = &sol[a..b];
        let body_start = step.find("; ").unwrap() + 2;
        let body = &step[body_start..];
        let rhs = body.find(" = ").unwrap() + 3;
        let e1_end = rhs + body[rhs..].find(" = ").unwrap_or(body.len() - rhs);
        let e1 = &body[rhs..e1_end];
        let e1b = e1.as_bytes();
        let Some(pos) = (0..e1b.len()).find(|&i| is_letter_at(e1b, i)) else {
            continue;
        };
        let read: Vec<char> = (0..e1b.len())
            .filter(|&i| is_letter_at(e1b, i))
            .map(|i| e1b[i] as char)
            .collect();
        let Some(&other) = letters[..letters.len() - 1]
            .iter()
            .find(|l| !read.contains(l))
        else {
            continue;
        };
        let at = a + body_start + rhs + pos;
        let c = format!("{}{}{}", &sol[..at], other, &sol[at + 1..]);
        for opts in [ON, OFF] {
            let s = judge(&p, &c, &opts);
            assert!(
                s.dependency_mismatch >= 1 && !s.verified && !s.strict,
                "{s:?}\n{c}"
            );
        }
        tested += 1;
    }
    assert!(tested >= 20, "only {tested} swaps exercised");
}

#[test]
fn extra_correct_step() {
    for p in problems() {
        // A distractor of the problem with a plain constant, defined correctly, before the solution.
        let extra = p
            .problem
            .split(". ")
            .map(|s| s.trim_end_matches('.'))
            .find_map(|s| {
                let rest = s.strip_prefix("The number of ")?;
                let (name, v) = rest.rsplit_once(" equals ")?;
                let v: i64 = v.parse().ok()?;
                (!p.gold.nodes.iter().any(|n| n.name == name)).then(|| (name.to_string(), v))
            });
        let (name, v) = extra.unwrap_or_else(|| ("adult unicorn in Nowhere".into(), 3));
        let used: Vec<char> = p.solution.chars().collect();
        let l = ('A'..='Z')
            .chain('a'..='z')
            .find(|c| *c != 'x' && !used.contains(c))
            .unwrap();
        let (body, _) = text::split_answer(&p.solution);
        let insert_at = if p.mode == Mode::Reverse {
            body.find("Define ").unwrap()
        } else {
            0
        };
        let c = format!(
            "{}Define {name} as {l}; so {l} = {v}. {}",
            &p.solution[..insert_at],
            &p.solution[insert_at..]
        );
        let s = judge(&p, &c, &ON);
        assert!(
            s.verified && !s.strict && s.extra == 1 && s.outcome,
            "{s:?}\n{c}"
        );
        assert_eq!(
            RewardConfig::STRICT.reward(&s),
            0.0,
            "the strict RL reward penalises extra steps"
        );
        assert!(RewardConfig::PROCESS.reward(&s) < 1.0);
    }
}

#[test]
fn renamed_letters_still_perfect() {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwyz"; // no x
    for p in problems() {
        for shift in [1usize, 7, 25] {
            let c = map_letters(&p.solution, |b| match ALPHA.iter().position(|a| *a == b) {
                Some(i) => ALPHA[(i + shift) % ALPHA.len()],
                None => b,
            });
            assert_ne!(c, p.solution);
            let s = judge(&p, &c, &ON);
            assert!(s.verified && s.strict && s.process == 1.0, "{s:?}\n{c}");
        }
    }
}

#[test]
fn whitespace_in_names_does_not_matter() {
    for p in problems() {
        let c = p.solution.replace(" in ", "  in\n ");
        assert_ne!(c, p.solution);
        let s = judge(&p, &c, &ON);
        assert!(s.verified && s.strict, "{s:?}\n{c}");
    }
}

#[test]
fn wrong_displayed_operand() {
    let mut tested = 0;
    for p in problems() {
        // `A + B = a + b = r` with a > 1 becomes `A + B = (a-1) + (b+1) = r`: right result, wrong operands.
        let sol = &p.solution;
        let Some(i) = sol.match_indices(" + ").map(|(i, _)| i).find(|&i| {
            let before = sol[..i].rsplit(' ').next().unwrap();
            let after = sol[i + 3..].split(' ').next().unwrap();
            before.parse::<i64>().is_ok_and(|v| v > 1)
                && after.parse::<i64>().is_ok()
                && sol[..i].ends_with(char::is_numeric)
                && sol[i + 3..].split(' ').nth(1) == Some("=")
        }) else {
            continue;
        };
        let bstart = i - sol[..i].rsplit(' ').next().unwrap().len();
        let aend = i + 3 + sol[i + 3..].split(' ').next().unwrap().len();
        let a: i64 = sol[bstart..i].parse().unwrap();
        let b: i64 = sol[i + 3..aend].parse().unwrap();
        let c = format!("{}{} + {}{}", &sol[..bstart], a - 1, b + 1, &sol[aend..]);
        let s = judge(&p, &c, &ON);
        assert!(!s.verified && s.arithmetic_mismatch >= 1, "{s:?}\n{c}");
        let s = judge(&p, &c, &OFF);
        assert!(
            s.verified && s.strict,
            "paper-compatible mode reads only final values: {s:?}"
        );
        tested += 1;
    }
    assert!(tested >= 10, "only {tested} operand edits exercised");
}

#[test]
fn garbage_truncated_and_answer_only() {
    for p in problems() {
        for g in [
            "",
            "hello world",
            "<answer>",
            "Define as ; so = = =",
            "Answer: banana.",
            "<solution> = = x * x </solution>",
        ] {
            let s = judge(&p, g, &ON);
            assert!(!s.verified && !s.strict && s.process == 0.0, "{g:?} {s:?}");
            assert_eq!(RewardConfig::PROCESS.reward(&s), 0.0);
        }
        // Truncated inside the last step's name (no answer, the last node missing).
        let full = text::target_completion(&p.solution);
        let cut = full.rfind("Define ").unwrap() + "Define ".len() + 3;
        let s = judge(&p, &full[..cut], &ON);
        assert!(!s.verified && !s.outcome && s.missing >= 1, "{s:?}");
        // The answer without steps: outcome reward 1, process reward only the answer weight, strict 0.
        let c = format!(" </solution> <answer> {} </answer>", p.answer);
        let s = judge(&p, &c, &ON);
        assert!(
            s.outcome
                && !s.verified
                && s.process == 0.0
                && s.missing as usize == p.gold.nodes.len(),
            "{s:?}"
        );
        assert_eq!(RewardConfig::OUTCOME.reward(&s), 1.0);
        assert!((RewardConfig::PROCESS.reward(&s) - 0.2).abs() < 1e-12);
        assert_eq!(RewardConfig::STRICT.reward(&s), 0.0);
    }
}

#[test]
fn reverse_tail_is_text() {
    // Letters in the equation prose must not become dependencies: rename every single letter of the tail except x
    // (there are none in the gold tail, so add prose with capital letters and `=`) and the verdict stays perfect.
    for p in problems().into_iter().filter(|p| p.mode == Mode::Reverse) {
        let c = p.solution.replace(
            "Simplifying the equation:",
            "Simplifying the equation A = B so Q = R:",
        );
        let s = judge(&p, &c, &ON);
        assert!(s.verified && s.strict, "{s:?}\n{c}");
    }
}

#[test]
fn steps_after_the_solution_region_are_ignored() {
    for p in problems() {
        let c = format!(
            "{} Define adult unicorn in Nowhere as Z; so Z = 1.",
            text::target_completion(&p.solution)
        );
        let s = judge(&p, &c, &ON);
        assert!(s.verified && s.strict && s.extra == 0, "{s:?}\n{c}");
        // A tag in the middle cuts the solution there.
        let body = text::split_answer(&p.solution).0;
        let last = body.rfind("Define ").unwrap();
        let c = format!(
            "{} <answer> {} </answer> {}",
            &body[..last],
            p.answer,
            &body[last..]
        );
        let s = judge(&p, &c, &ON);
        assert!(s.outcome && s.missing >= 1 && !s.verified, "{s:?}\n{c}");
    }
}

#[test]
fn answer_grammar() {
    assert_eq!(
        extract_answer("... </solution> <answer> 15 </answer>"),
        Some("15")
    );
    assert_eq!(extract_answer("<ANSWER>15.</ANSWER>"), Some("15"));
    assert_eq!(extract_answer("<answer> 15\nmore"), Some("15"));
    assert_eq!(extract_answer("so g = 15. Answer: 15."), Some("15"));
    assert_eq!(extract_answer("Answer: 3. Answer: 15."), Some("15"));
    assert_eq!(
        extract_answer("<answer>7</answer> Answer: 15."),
        Some("7"),
        "the tag wins"
    );
    assert_eq!(extract_answer("no answer here"), None);
    assert!(answers_equal("015", "15") && !answers_equal("15", "16") && answers_equal("x", "x"));
}

/// The verbatim outputs of the paper's generator quoted in paper-spec §2.6: our parser reads them, their op(G)
/// comes out right, and they verify as perfect against themselves (arithmetic checked).
#[test]
fn paper_generator_outputs() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/paper_examples.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut n = 0;
    for line in text.lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        let sol = rec["solution"].as_str().unwrap();
        let gold = GoldGraph::from_solution(sol).unwrap();
        assert_eq!(
            task::verify::solution_op(sol),
            rec["op"].as_u64().map(|o| o as u32),
            "{sol}"
        );
        let s = score(&gold, sol, &ON);
        assert!(s.verified && s.strict, "{s:?}\n{sol}");
        let s = score(&gold, &text::target_completion(sol), &ON);
        assert!(s.verified && s.strict, "{s:?}");
        n += 1;
    }
    assert_eq!(n, 4);
}

/// Reverse-mode solutions in the paper's exact text (`tests/data/paper_reverse.jsonl`: verbatim records of the
/// released generator and solutions built by its rendering rules; plus the reverse example of paper-spec §2.6).
fn paper_reverse_records() -> Vec<serde_json::Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut out = Vec::new();
    for file in ["paper_reverse.jsonl", "paper_examples.jsonl"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for line in text.lines() {
            let rec: serde_json::Value = serde_json::from_str(line).unwrap();
            if rec["mode"] == "forwardreverse" {
                out.push(rec);
            }
        }
    }
    assert!(out.len() >= 7, "{} reverse records", out.len());
    out
}

#[test]
fn paper_reverse_format_is_verified() {
    for rec in paper_reverse_records() {
        let sol = rec["solution"].as_str().unwrap();
        let gold = GoldGraph::from_solution(sol).unwrap();
        assert_eq!(
            task::verify::solution_op(sol),
            rec["op"].as_u64().map(|o| o as u32),
            "{sol}"
        );
        for c in [sol.to_string(), text::target_completion(sol)] {
            let s = score(&gold, &c, &ON);
            assert!(
                s.verified && s.strict && s.arithmetic_mismatch == 0 && s.arithmetic_unchecked == 0,
                "{s:?}\n{c}"
            );
        }
        let x = sol.rsplit("Solution: x = ").next().unwrap();
        assert_eq!(
            extract_answer(sol),
            Some(x.split('.').next().unwrap()),
            "the answer is the solved x"
        );
    }
}

/// Byte ranges of the displayed middle part `e2` of every chain `L = e1 = e2 = ... = ek` in the steps.
fn middle_parts(sol: &str) -> Vec<(usize, usize)> {
    let body_end = sol
        .find("We know")
        .or_else(|| sol.rfind("Answer:"))
        .unwrap();
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in sol[..body_end].char_indices() {
        if c != ';' && c != '.' {
            continue;
        }
        let clause = &sol[start..i];
        let eqs: Vec<usize> = clause
            .match_indices(" = ")
            .map(|(k, _)| start + k)
            .collect();
        if eqs.len() >= 3 {
            out.push((eqs[1] + 3, eqs[2]));
        }
        start = i + 1;
    }
    out
}

#[test]
fn paper_reverse_wrong_displayed_number_is_caught() {
    let mut tested = 0;
    for rec in paper_reverse_records() {
        let sol = rec["solution"].as_str().unwrap();
        let gold = GoldGraph::from_solution(sol).unwrap();
        for (a, b) in middle_parts(sol) {
            // The first number of the middle part, one more: `(3) * (x)` -> `(4) * (x)`, `2*x + 2 + 3` ->
            // `3*x + 2 + 3`. The step's final form is untouched, so only the arithmetic check can see it.
            let Some(d0) = sol[a..b].find(|c: char| c.is_ascii_digit()).map(|k| a + k) else {
                continue;
            };
            let d1 = d0 + sol[d0..].find(|c: char| !c.is_ascii_digit()).unwrap();
            let v: i64 = sol[d0..d1].parse().unwrap();
            let c = format!("{}{}{}", &sol[..d0], v + 1, &sol[d1..]);
            let s = score(&gold, &c, &ON);
            assert!(
                !s.verified && s.arithmetic_mismatch >= 1 && s.value_mismatch == 0 && s.outcome,
                "{s:?}\n{c}"
            );
            let s = score(&gold, &c, &OFF);
            assert!(
                s.verified,
                "paper-compatible mode reads final values only: {s:?}"
            );
            tested += 1;
        }
    }
    assert!(tested >= 8, "only {tested} edits exercised");
}

#[test]
fn paper_reverse_wrong_final_answer_fails() {
    for rec in paper_reverse_records() {
        let sol = rec["solution"].as_str().unwrap();
        let gold = GoldGraph::from_solution(sol).unwrap();
        let ans: i64 = gold.answer.parse().unwrap();
        let c = sol.replace(&format!("Answer: {ans}."), &format!("Answer: {}.", ans + 1));
        assert_ne!(c, sol);
        let s = score(&gold, &c, &ON);
        assert!(!s.outcome && !s.verified && s.answer_mismatch, "{s:?}");
        // A wrong symbolic form of the query (the equation a wrong x would come from) is a value mismatch.
        let we_know = sol.find(". We know").unwrap();
        let last_eq = sol[..we_know].rfind(" = ").unwrap() + 3;
        let c = format!("{}2*x + 1{}", &sol[..last_eq], &sol[we_know..]);
        let s = score(&gold, &c, &ON);
        assert!(!s.verified && s.value_mismatch >= 1, "{s:?}\n{c}");
    }
}

#[test]
fn other_renderings_of_the_same_arithmetic_are_verified() {
    let recs = paper_reverse_records();
    let by_op = |op: u64, needle: &str| {
        recs.iter()
            .map(|r| r["solution"].as_str().unwrap().to_string())
            .find(|s| s.contains(needle))
            .unwrap_or_else(|| panic!("no op {op} record with {needle:?}"))
    };
    for (op, from, to) in [
        // Our compact rendering: bare operands, parentheses only where needed.
        (4, "(3) * (x) = 3*x", "3 * x = 3*x"),
        (6, "(2) * (4 - x)", "2 * (4 - x)"),
        (6, "(4) - (x)", "4 - x"),
        (7, "x + x + 2 = 2*x + 2", "x + (x + 2) = 2*x + 2"),
        // Terms in another order.
        (7, "2*x + 2 + 3 = 2*x + 5", "2 + 2*x + 3 = 5 + 2*x"),
    ] {
        let sol = by_op(op, from);
        let gold = GoldGraph::from_solution(&sol).unwrap();
        let c = sol.replace(from, to);
        let s = score(&gold, &c, &ON);
        assert!(s.verified && s.arithmetic_mismatch == 0, "{s:?}\n{c}");
    }
}

#[test]
fn unreadable_or_non_linear_arithmetic_is_unchecked_not_wrong() {
    let sol = paper_reverse_records()
        .into_iter()
        .map(|r| r["solution"].as_str().unwrap().to_string())
        .find(|s| s.contains("(3) * (x) = 3*x"))
        .unwrap();
    let gold = GoldGraph::from_solution(&sol).unwrap();
    for middle in [
        "(3) * (x) * (x) / (x)",
        "three times x",
        "(3) * (x) = x * x / x * 3",
    ] {
        let c = sol.replace("(3) * (x) = 3*x", &format!("{middle} = 3*x"));
        let s = score(&gold, &c, &ON);
        assert!(
            s.verified && s.arithmetic_mismatch == 0 && s.arithmetic_unchecked == 1,
            "{s:?}\n{c}"
        );
    }
    // Unchecked middle parts do not hide a wrong result.
    let c = sol.replace("(3) * (x) = 3*x", "(3) * (x) * (x) / (x) = 2*x");
    let s = score(&gold, &c, &ON);
    assert!(!s.verified && s.value_mismatch >= 1, "{s:?}\n{c}");
}

#[test]
fn modulus_reduces_forms_in_x() {
    let sol = "The question is difficult, so we use equations to solve it. Define adult owl in South Zoo as x; we \
               don't know its value yet but will find it out later. Define adult fox in South Zoo as Q; V = x = x; \
               so Q = 20 + V = 20 + x = x + 20. Define adult bear in South Zoo as R; so R = 4 + Q = 4 + x + 20 = \
               x + 1. We know R = 3, so we have x + 1 = 3. Answer: 2.";
    let gold = GoldGraph::from_solution(sol).unwrap();
    let m23 = VerifyOptions {
        check_arithmetic: true,
        modulus: Some(23),
    };
    let s = score(&gold, sol, &m23);
    assert!(s.verified && s.arithmetic_mismatch == 0, "{s:?}");
    let s = score(&gold, sol, &ON);
    assert!(!s.verified && s.arithmetic_mismatch == 1, "{s:?}");
}
