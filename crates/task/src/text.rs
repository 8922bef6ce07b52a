//! Training text and prompts in the paper's formats (`utils/text_preprocess.compose_text`,
//! `verl/dataset.py::compose_prompt`), with the question after the problem (the paper) or before it
//! ([`QuestionPosition::First`], the `cpu` preset).

use crate::config::QuestionPosition;

/// Splits a solution at its last `Answer:` into (body, answer); the answer loses a trailing `.`.
/// A solution without `Answer:` is all body with an empty answer.
pub fn split_answer(solution: &str) -> (&str, &str) {
    match solution.rfind("Answer:") {
        Some(i) => {
            let body = solution[..i].trim();
            let ans = solution[i + "Answer:".len()..].trim();
            let ans = ans.strip_suffix('.').unwrap_or(ans).trim();
            (body, ans)
        }
        None => (solution.trim(), ""),
    }
}

fn push_squeezed(out: &mut String, s: &str) {
    let mut first = true;
    for w in s.split_whitespace() {
        if !first || !out.is_empty() && !out.ends_with(' ') {
            out.push(' ');
        }
        out.push_str(w);
        first = false;
    }
}

/// The pre-/mid-training text in the paper's order (the pretrain processor then appends EOS):
/// `<question> {problem} {question} </question> <solution> {body} </solution> <answer> {answer} </answer>`,
/// whitespace runs squeezed to single spaces.
pub fn training_text(problem: &str, question: &str, solution: &str) -> String {
    training_text_at(problem, question, solution, QuestionPosition::Last)
}

/// [`training_text`] with the question where `position` says.
pub fn training_text_at(
    problem: &str,
    question: &str,
    solution: &str,
    position: QuestionPosition,
) -> String {
    let (body, answer) = split_answer(solution);
    let mut out = prompt_at(problem, question, position);
    out.reserve(solution.len() + 40);
    push_squeezed(&mut out, body);
    out.push_str(" </solution> <answer>");
    push_squeezed(&mut out, answer);
    out.push_str(" </answer>");
    out
}

/// The RL / evaluation prompt in the paper's order: everything up to and including `<solution>`.
pub fn prompt(problem: &str, question: &str) -> String {
    prompt_at(problem, question, QuestionPosition::Last)
}

/// [`prompt`] with the question where `position` says.
pub fn prompt_at(problem: &str, question: &str, position: QuestionPosition) -> String {
    let (first, second) = match position {
        QuestionPosition::Last => (problem, question),
        QuestionPosition::First => (question, problem),
    };
    let mut out = String::with_capacity(problem.len() + question.len() + 40);
    out.push_str("<question>");
    push_squeezed(&mut out, first);
    push_squeezed(&mut out, second);
    out.push_str(" </question> <solution>");
    out
}

/// What a model should write after [`prompt`]: ` {body} </solution> <answer> {answer} </answer>`.
pub fn target_completion(solution: &str) -> String {
    let (body, answer) = split_answer(solution);
    let mut out = String::with_capacity(solution.len() + 40);
    push_squeezed(&mut out, body);
    out.insert(0, ' ');
    out.push_str(" </solution> <answer>");
    push_squeezed(&mut out, answer);
    out.push_str(" </answer>");
    out
}

/// Approximate token count of a text under a word-level tokenizer (whitespace-separated words, with
/// `. ; , ? : = + - * / ( )` as separate tokens, tags as single tokens); used for token budgets.
pub fn approx_tokens(text: &str) -> usize {
    let mut n = 0usize;
    let mut in_word = false;
    for b in text.bytes() {
        match b {
            b' ' | b'\n' | b'\t' | b'\r' => in_word = false,
            b'.' | b';' | b',' | b'?' | b':' | b'=' | b'+' | b'*' | b'/' | b'(' | b')' => {
                n += 1;
                in_word = false;
            }
            _ => {
                if !in_word {
                    n += 1;
                    in_word = true;
                }
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let sol = "Define a in B as b; so b = 3. Answer: 3.";
        assert_eq!(split_answer(sol), ("Define a in B as b; so b = 3.", "3"));
        assert_eq!(
            training_text("P1. P2.", "Q?", sol),
            "<question> P1. P2. Q? </question> <solution> Define a in B as b; so b = 3. </solution> <answer> 3 </answer>"
        );
        assert_eq!(
            prompt("P1.", "Q?"),
            "<question> P1. Q? </question> <solution>"
        );
        assert_eq!(
            target_completion(sol),
            " Define a in B as b; so b = 3. </solution> <answer> 3 </answer>"
        );
        assert_eq!(approx_tokens("so b = 3."), 5);
        assert_eq!(
            prompt_at("P1.", "Q?", QuestionPosition::First),
            "<question> Q? P1. </question> <solution>"
        );
        assert_eq!(
            training_text_at("P1. P2.", "Q?", sol, QuestionPosition::First),
            "<question> Q? P1. P2. </question> <solution> Define a in B as b; so b = 3. </solution> <answer> 3 </answer>"
        );
        // The prompt is a prefix of the training text in both orders: what the model is trained to continue.
        for pos in [QuestionPosition::Last, QuestionPosition::First] {
            let full = training_text_at(" P1.\n P2. ", "Q? ", sol, pos);
            assert!(full.starts_with(&prompt_at(" P1.\n P2. ", "Q? ", pos)));
            assert_eq!(
                full,
                prompt_at(" P1.\n P2. ", "Q? ", pos) + &target_completion(sol)
            );
        }
    }
}
