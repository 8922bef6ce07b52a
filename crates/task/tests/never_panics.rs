//! The parser and verifier never panic on arbitrary text, and scores stay in range.

use proptest::prelude::*;
use task::verify::{GoldGraph, RewardConfig, VerifyOptions, score};
use task::{Context, Mode, ProblemSpec, TaskConfig, generate};

fn gold() -> (GoldGraph, String) {
    let p = generate(
        &TaskConfig::paper(),
        &ProblemSpec {
            op: 8,
            context: Context::Zoo,
            mode: Mode::Reverse,
            d: 2,
        },
        1,
        0,
    )
    .unwrap();
    (GoldGraph::from_solution(&p.solution).unwrap(), p.solution)
}

fn check(g: &GoldGraph, text: &str) {
    for opts in [
        VerifyOptions::default(),
        VerifyOptions {
            check_arithmetic: false,
            modulus: Some(23),
        },
    ] {
        let s = score(g, text, &opts);
        assert!((0.0..=1.0).contains(&s.process));
        for r in [
            RewardConfig::OUTCOME,
            RewardConfig::PROCESS,
            RewardConfig::STRICT,
        ] {
            assert!((0.0..=1.0).contains(&r.reward(&s)));
        }
        assert!(!s.strict || s.verified);
    }
    let _ = GoldGraph::from_solution(text);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_unicode(text in "\\PC{0,300}") {
        let (g, _) = gold();
        check(&g, &text);
    }

    #[test]
    fn grammar_soup(parts in proptest::collection::vec(prop_oneof![
        Just("Define "), Just(" as "), Just("x"), Just("A"), Just("b"), Just("; "), Just(". "), Just(" = "), Just("so "),
        Just(" + "), Just(" - "), Just(" * "), Just(" / "), Just("("), Just(")"), Just("99999999999999999999"), Just("3"),
        Just("0"), Just("We know "), Just("Answer: "), Just("<answer>"), Just("</answer>"), Just("</solution>"),
        Just("adult owl in Cedar Valley"), Just("-"), Just("é"), Just("<"),
    ], 0..80)) {
        let (g, _) = gold();
        check(&g, &parts.concat());
    }

    #[test]
    fn mutated_gold(cut in 0usize..2000, ins in "\\PC{0,8}") {
        let (g, sol) = gold();
        let mut at = cut.min(sol.len());
        while !sol.is_char_boundary(at) { at -= 1; }
        check(&g, &format!("{}{}{}", &sol[..at], ins, &sol[at..]));
        check(&g, &sol[..at]);
    }
}
