//! Parser and process verifier: a solution text -> a graph (parameter names are node identities), compared node
//! by node with the gold graph (paper spec §6.2, §7).
//!
//! # Solution grammar
//! * A step starts at `Define <name> as <L>;` where `<L>` is one ASCII letter; it runs to the next `Define`, to
//!   the reverse-mode equation tail (`We know ...`), to `Answer:` or to the end of the solution region (the first
//!   `</solution>` or `<answer>` tag).
//! * Inside a step, clauses are separated by `;` and `.`. A clause `[so] Y = e1 = e2 = ... = ek` is an assignment;
//!   any other clause is text (so the equation-solving prose of reverse mode never creates dependencies).
//! * Dependencies of a step = the nodes of every letter read in the `e1` of its assignments, followed through helper
//!   letters; constants create no node. A letter is read as a whole token (`Q` in `Quebec` is not a letter).
//! * The value of a step = `ek` of the last assignment to the step's own letter, evaluated as a linear expression
//!   in `x` (reverse mode: `3*x + 2`); the reverse-mode unknown (`Define ... as x;` with no assignment) has value `x`.
//! * Displayed arithmetic (switchable): every `e1 = e2 = ... = ek` chain must evaluate to one value, as a linear
//!   form `a*x + b` after substituting what each letter stands for (numbers, or forms in `x` in reverse mode), and
//!   `e2` must be `e1` with each operand replaced by an expression of its value (`U = k + f = 4 + 4 = 8`,
//!   `w = 3 * u = (3) * (x) = 3*x`, `d = F + R = x + 2 + 3*x = 4*x + 2`), so a wrong operand is caught even when
//!   the result is right. A chain that cannot be checked (a product of two forms in `x`, a part the parser cannot
//!   read) is not counted as wrong; [`Score::arithmetic_unchecked`] counts such steps. With a modulus, both
//!   coefficients are reduced.
//! * Reverse mode's equation tail (`We know d = 12, so we have 3*x = 12 and we solve it ... Solution: x = 4.`)
//!   is prose: it creates no step; the unknown's value comes from the answer.
//!
//! # Answer grammar (one extractor for every score)
//! The text inside `<answer> ... </answer>` (case-insensitive; an unclosed `<answer>` runs to the next `<` or
//! newline); without an `<answer>` tag, the text after the last `Answer:` up to the next `<` or newline. Trimmed,
//! one trailing `.` removed. Two answers are equal when both parse as integers with the same value, or else when the
//! strings are equal.
//!
//! # Scores
//! `N = max(|gold nodes|, 1)`; `penalty = value mismatches + dependency mismatches + missing gold nodes
//! + min(extra nodes, N) + [answer mismatch] + arithmetic mismatches (when checked)`; process accuracy
//! `R_pv = max(0, 1 - penalty / N)`. An extra node is a predicted parameter that is not in the gold graph, or a
//! repeated definition (the last definition of a name is the one compared). `verified` (the paper's
//! VerifiedCorrect, used for pass@k) = every gold node present with the right parents and value (and arithmetic)
//! and the right answer, extra correct steps allowed. `strict` = verified and no extra node (penalty 0).

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// A linear value `a*x + b` (`a = 0` for plain numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Val {
    pub a: i64,
    pub b: i64,
}

impl Val {
    pub fn num(b: i64) -> Val {
        Val { a: 0, b }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Word,
    /// A non-negative integer literal; -1 when it does not fit in an i32 (no value in this task comes close).
    Num(i32),
    Sym(u8),
    /// `<solution>`, `</answer>`, ...: the bytes between the angle brackets.
    Tag,
}

#[derive(Clone, Copy, Debug)]
struct Token {
    t: Tok,
    start: u32,
    end: u32,
}

const WS: u8 = 0;
const DIGIT: u8 = 1;
const SYM: u8 = 2;
const ALPHA: u8 = 3;
const LT: u8 = 4;
const DASH: u8 = 5;

/// Byte classes: whitespace, digit, symbol, `<`, `-`, and everything else (word bytes: letters, UTF-8, `'`, ...).
static CLASS: [u8; 256] = {
    let mut t = [ALPHA; 256];
    t[b' ' as usize] = WS;
    t[b'\t' as usize] = WS;
    t[b'\n' as usize] = WS;
    t[b'\r' as usize] = WS;
    t[0x0b] = WS;
    t[0x0c] = WS;
    let mut d = b'0';
    while d <= b'9' {
        t[d as usize] = DIGIT;
        d += 1;
    }
    let syms = b".;,?=+*/():>!\"";
    let mut i = 0;
    while i < syms.len() {
        t[syms[i] as usize] = SYM;
        i += 1;
    }
    t[b'<' as usize] = LT;
    t[b'-' as usize] = DASH;
    t
};

#[inline]
fn is_alpha_like(b: u8) -> bool {
    b.is_ascii_alphabetic() || b >= 0x80 || b == b'\'' || b == b'_'
}

/// Where tokenizing a step body stopped.
enum Stop {
    /// Before a whole-word `Define` followed by whitespace, at this position.
    Define(usize),
    /// At the reverse-mode equation tail (`We know`) or `Answer:`, at this position: text up to the next `Define`.
    Tail(usize),
    /// At the end of the solution region (`</solution>` or `<answer>`), at this position.
    Region(usize),
    End,
}

/// Tokenizes `text[start..end]` (positions stay absolute) up to the next `Define`, `We know` or `Answer:`.
fn tokenize(text: &str, start: usize, end: usize, out: &mut Vec<Token>) -> Stop {
    out.clear();
    let s = text.as_bytes();
    let n = end.min(s.len()).min(u32::MAX as usize - 1);
    let mut i = start;
    while i < n {
        let mut b = s[i];
        // Tokens are nearly always separated by one space: skip it without a class dispatch.
        if b == b' ' {
            i += 1;
            if i == n {
                break;
            }
            b = s[i];
        }
        match CLASS[b as usize] {
            WS => {
                i += 1;
            }
            DIGIT => {
                let mut j = i;
                let mut v: Option<i64> = Some(0);
                while j < n && s[j].is_ascii_digit() {
                    v = v
                        .and_then(|v| v.checked_mul(10))
                        .and_then(|v| v.checked_add((s[j] - b'0') as i64));
                    j += 1;
                }
                let v = v.and_then(|v| i32::try_from(v).ok()).unwrap_or(-1);
                out.push(Token {
                    t: Tok::Num(v),
                    start: i as u32,
                    end: j as u32,
                });
                i = j;
            }
            SYM | DASH => {
                out.push(Token {
                    t: Tok::Sym(b),
                    start: i as u32,
                    end: (i + 1) as u32,
                });
                i += 1;
            }
            LT => {
                let mut j = i + 1;
                while j < n
                    && j - i <= 16
                    && (s[j].is_ascii_alphabetic() || s[j] == b'/' || s[j] == b'_')
                {
                    j += 1;
                }
                if j < n && s[j] == b'>' && j > i + 1 {
                    if is_region_tag(&s[i..]) {
                        return Stop::Region(i);
                    }
                    out.push(Token {
                        t: Tok::Tag,
                        start: (i + 1) as u32,
                        end: j as u32,
                    });
                    i = j + 1;
                } else {
                    out.push(Token {
                        t: Tok::Sym(b),
                        start: i as u32,
                        end: (i + 1) as u32,
                    });
                    i += 1;
                }
            }
            _ => {
                // A word; a hyphen stays inside only between two letters (sci-fi, Saint-Rivage).
                let mut j = i + 1;
                while j < n {
                    let c = CLASS[s[j] as usize];
                    let inner_dash = c == DASH
                        && j + 1 < n
                        && is_alpha_like(s[j + 1])
                        && is_alpha_like(s[j - 1]);
                    if c != ALPHA && !inner_dash {
                        break;
                    }
                    j += 1;
                }
                let w = &s[i..j];
                if eq_short(w, b"Define") && j < n && s[j].is_ascii_whitespace() {
                    return Stop::Define(i);
                }
                if eq_short(w, b"We") || eq_short(w, b"Answer") {
                    let mut k = j;
                    while k < n && s[k].is_ascii_whitespace() {
                        k += 1;
                    }
                    let rest = &s[k..n];
                    if (w[0] == b'W' && rest.starts_with(b"know"))
                        || (w[0] == b'A' && rest.starts_with(b":"))
                    {
                        return Stop::Tail(i);
                    }
                }
                out.push(Token {
                    t: Tok::Word,
                    start: i as u32,
                    end: j as u32,
                });
                i = j;
            }
        }
    }
    Stop::End
}

/// The verdict on one displayed chain `e1 = e2 = ... = ek`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Right,
    Wrong,
    /// Not checkable here (a non-linear product, an unreadable part): never counted as wrong.
    Unknown,
}

/// What a letter stands for while a solution is read.
#[derive(Clone, Copy, Debug)]
enum Binding {
    None,
    Node(u32),
    Helper(u32),
}

#[derive(Clone, Copy, Debug)]
struct Helper {
    deps_start: u32,
    deps_len: u32,
    val: Option<Val>,
}

/// One parsed step.
#[derive(Clone, Debug)]
pub struct Step {
    /// Byte range of the parameter name in the text.
    pub name: (u32, u32),
    pub letter: u8,
    /// Range in the verifier's parent arena: step indices this step reads (deduplicated, sorted).
    parents: (u32, u32),
    pub value: Option<Val>,
    /// No displayed arithmetic of the step is inconsistent.
    pub arith_ok: bool,
    /// Some displayed arithmetic could not be checked (a product of two forms in x, a part the parser cannot
    /// read): it is not counted as wrong.
    pub arith_unchecked: bool,
    /// A letter was read that nothing defined.
    pub bad_ref: bool,
    /// A literal constant is read (a leaf `so b = 3`, a prefix `4 * N`), or this is the reverse-mode unknown:
    /// the RNG edge of op(G).
    pub constant: bool,
}

/// Reusable parser / scorer state: keeps its buffers between calls (hot loops should hold one per thread).
#[derive(Default)]
pub struct Verifier {
    pub opts: VerifyOptions,
    toks: Vec<Token>,
    steps: Vec<Step>,
    helpers: Vec<Helper>,
    arena: Vec<u32>,
    scratch: Vec<u32>,
    parent_arena: Vec<u32>,
    gidx: Vec<u32>,
    pred_of_gold: Vec<u32>,
}

/// Verifier switches.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct VerifyOptions {
    /// Check the displayed arithmetic of every step (off = the paper's parser, which only reads final values).
    pub check_arithmetic: bool,
    /// Arithmetic modulo this (iGSM-style data).
    pub modulus: Option<i64>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            check_arithmetic: true,
            modulus: None,
        }
    }
}

/// The verdict on one completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// R_out: the extracted answer equals the gold answer.
    pub outcome: bool,
    /// R_pv = max(0, 1 - penalty / N).
    pub process: f64,
    /// No penalty at all (the strict RL reward's condition), answer right.
    pub strict: bool,
    /// VerifiedCorrect: every gold node right, answer right, extra correct steps allowed.
    pub verified: bool,
    pub gold_nodes: u32,
    pub predicted_nodes: u32,
    pub value_mismatch: u32,
    pub dependency_mismatch: u32,
    pub missing: u32,
    pub extra: u32,
    pub arithmetic_mismatch: u32,
    /// Gold nodes matched right whose displayed arithmetic could not all be checked (not penalised).
    #[serde(default)]
    pub arithmetic_unchecked: u32,
    pub answer_mismatch: bool,
    pub penalty: u32,
    /// The extracted answer, if any.
    pub answer: Option<String>,
}

/// A gold solution, parsed once and compared against many completions.
#[derive(Clone, Debug)]
pub struct GoldGraph {
    pub names: Vec<String>,
    /// Sorted gold indices of each node's parents.
    pub parents: Vec<Vec<u32>>,
    pub values: Vec<Option<Val>>,
    pub answer: String,
    /// (name hash, index), sorted, for lookups.
    index: Vec<(u64, u32)>,
}

/// A cheap hash of a name: its length and first and last eight bytes (names differ at the start, the item type,
/// or at the end, the entity). Collisions only cost a comparison.
fn quick_hash(s: &[u8]) -> u64 {
    let n = s.len();
    let word = |b: &[u8]| b.iter().fold(0u64, |h, &c| (h << 8) | c as u64);
    let head = word(&s[..n.min(8)]);
    let tail = word(&s[n.saturating_sub(8)..]);
    (head ^ tail.rotate_left(29) ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// `raw` equals `gold` up to whitespace runs.
fn name_eq(gold: &[u8], raw: &[u8]) -> bool {
    if gold == raw {
        return true;
    }
    let mut g = gold.iter().copied().peekable();
    let mut r = raw
        .iter()
        .copied()
        .skip_while(|b| b.is_ascii_whitespace())
        .peekable();
    loop {
        match (g.next(), r.next()) {
            (None, None) => return true,
            (None, Some(b)) => {
                if !b.is_ascii_whitespace() {
                    return false;
                }
                return r.all(|b| b.is_ascii_whitespace());
            }
            (Some(_), None) => return false,
            (Some(a), Some(b)) => {
                if a == b' ' && b.is_ascii_whitespace() {
                    while r.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                        r.next();
                    }
                } else if a != b {
                    return false;
                }
            }
        }
    }
}

impl GoldGraph {
    /// Parses a gold solution (forward or reverse). Fails when it has no step, no answer, or a step reads a
    /// letter nothing defined.
    pub fn from_solution(solution: &str) -> anyhow::Result<GoldGraph> {
        let mut v = Verifier::new(VerifyOptions {
            check_arithmetic: false,
            modulus: None,
        });
        v.parse(solution);
        if v.steps.is_empty() {
            bail!(
                "gold solution has no `Define <name> as <L>;` step: {:?}",
                truncate(solution)
            );
        }
        let answer = extract_answer(solution)
            .with_context(|| format!("gold solution has no answer: {:?}", truncate(solution)))?;
        let mut names: Vec<String> = Vec::new();
        let mut last: Vec<u32> = Vec::new(); // step index -> gold index
        for st in &v.steps {
            let raw = &solution.as_bytes()[st.name.0 as usize..st.name.1 as usize];
            let name = String::from_utf8_lossy(raw)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            match names.iter().position(|n| *n == name) {
                Some(i) => last.push(i as u32),
                None => {
                    last.push(names.len() as u32);
                    names.push(name);
                }
            }
        }
        let mut parents = vec![Vec::new(); names.len()];
        let mut values = vec![None; names.len()];
        for (si, st) in v.steps.iter().enumerate() {
            if st.bad_ref {
                bail!(
                    "gold solution reads an undefined letter in the step for `{}`",
                    names[last[si] as usize]
                );
            }
            let gi = last[si] as usize;
            let mut ps: Vec<u32> = v.parents_of(st).iter().map(|&j| last[j as usize]).collect();
            ps.sort_unstable();
            ps.dedup();
            parents[gi] = ps;
            values[gi] = st.value;
        }
        let mut index: Vec<(u64, u32)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (quick_hash(n.as_bytes()), i as u32))
            .collect();
        index.sort_unstable();
        Ok(GoldGraph {
            names,
            parents,
            values,
            answer: answer.to_string(),
            index,
        })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The gold index of a predicted name (equal up to whitespace runs). A cheap hash of the raw bytes finds
    /// well-formed names; anything else falls back to comparing against every gold name.
    fn find(&self, raw: &[u8]) -> Option<u32> {
        let h = quick_hash(raw);
        let lo = self.index.partition_point(|e| e.0 < h);
        self.index[lo..]
            .iter()
            .take_while(|e| e.0 == h)
            .map(|e| e.1)
            .find(|&i| self.names[i as usize].as_bytes() == raw)
            .or_else(|| {
                (0..self.names.len() as u32)
                    .find(|&i| name_eq(self.names[i as usize].as_bytes(), raw))
            })
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(120);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `r` starts with `</solution>` or `<answer>` (case-insensitive): the end of the solution region.
#[inline]
fn is_region_tag(r: &[u8]) -> bool {
    (r.len() >= 11 && r[..11].eq_ignore_ascii_case(b"</solution>"))
        || (r.len() >= 8 && r[..8].eq_ignore_ascii_case(b"<answer>"))
}

/// First position at or after `from` holding one of the bytes of `set` (eight bytes at a time: a zero byte of
/// `x ^ c` is found with the classic `(y - 0x01..) & !y & 0x80..` test, whose lowest hit is always exact).
#[inline]
fn find_bytes<const K: usize>(b: &[u8], from: usize, set: [u8; K]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while i + 8 <= b.len() {
        let x = u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let mut m = 0u64;
        for c in set {
            let y = x ^ (LO * c as u64);
            m |= y.wrapping_sub(LO) & !y & HI;
        }
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    (i..b.len()).find(|&k| set.contains(&b[k]))
}

/// The next step start or the region end from `from`: a whole-word `Define` followed by whitespace, or the first
/// `</solution>` / `<answer>` tag.
enum Next {
    Define(usize),
    Region(usize),
    None,
}

fn next_define_or_region(b: &[u8], from: usize) -> Next {
    let mut i = from;
    while let Some(k) = find_bytes(b, i, [b'D', b'<']) {
        if b[k] == b'<' {
            if is_region_tag(&b[k..]) {
                return Next::Region(k);
            }
        } else if b[k..].starts_with(b"Define")
            && (k == 0 || !is_word_byte(b[k - 1]))
            && b.get(k + 6).is_some_and(|c| c.is_ascii_whitespace())
        {
            return Next::Define(k);
        }
        i = k + 1;
    }
    Next::None
}

/// Byte-slice equality without a `memcmp` call (for the few short keywords).
#[inline(always)]
fn eq_short(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

#[inline]
fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c >= 0x80 || c == b'_' || c == b'\''
}

/// In `b[from..end]`: the first whole-word `as` followed by a one-letter token; returns (position of `as`, the
/// letter, the position after the letter).
fn find_as_letter(b: &[u8], from: usize, end: usize) -> Option<(usize, u8, usize)> {
    let mut i = from + 1;
    while i + 2 < end {
        if b[i] == b'a'
            && b[i + 1] == b's'
            && b[i - 1].is_ascii_whitespace()
            && b[i + 2].is_ascii_whitespace()
        {
            let mut j = i + 2;
            while j < end && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < end && b[j].is_ascii_alphabetic() && (j + 1 >= end || !is_word_byte(b[j + 1])) {
                return Some((i, b[j], j + 1));
            }
        }
        i += 1;
    }
    None
}

/// op(G) of a solution read from its text: every step's parents plus one edge for a step that reads a constant
/// (or is the reverse-mode unknown, whose constant the problem hides). `None` when there is no step.
pub fn solution_op(solution: &str) -> Option<u32> {
    let mut v = Verifier::new(VerifyOptions {
        check_arithmetic: false,
        modulus: None,
    });
    v.parse(solution);
    if v.steps.is_empty() {
        return None;
    }
    Some(
        v.steps
            .iter()
            .map(|st| st.parents.1 + st.constant as u32)
            .sum(),
    )
}

/// The one answer extractor (see the module docs).
pub fn extract_answer(text: &str) -> Option<&str> {
    extract_answer_from(text, 0)
}

/// [`extract_answer`] when no `<answer>` tag starts before `from`.
fn extract_answer_from(text: &str, from: usize) -> Option<&str> {
    fn tag_at(b: &[u8], i: usize, tag: &[u8]) -> bool {
        b.len() >= i + tag.len() && b[i..i + tag.len()].eq_ignore_ascii_case(tag)
    }
    fn clean(s: &str) -> &str {
        let s = s.trim();
        s.strip_suffix('.').unwrap_or(s).trim()
    }
    let b = text.as_bytes();
    if let Some(i) = text[from..]
        .match_indices('<')
        .map(|(i, _)| from + i)
        .find(|i| tag_at(b, *i, b"<answer>"))
    {
        let start = i + "<answer>".len();
        let end = match text[start..]
            .match_indices('<')
            .find(|(j, _)| tag_at(b, start + j, b"</answer>"))
        {
            Some((j, _)) => start + j,
            None => text[start..]
                .find(['<', '\n'])
                .map_or(text.len(), |j| start + j),
        };
        return Some(clean(&text[start..end]));
    }
    let i = text.rfind("Answer:")?;
    let start = i + "Answer:".len();
    let end = text[start..]
        .find(['<', '\n'])
        .map_or(text.len(), |j| start + j);
    Some(clean(&text[start..end]))
}

/// Answer equality: same integer when both parse, else the same string.
pub fn answers_equal(a: &str, b: &str) -> bool {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

impl Verifier {
    pub fn new(opts: VerifyOptions) -> Verifier {
        Verifier {
            opts,
            ..Default::default()
        }
    }

    /// The step indices a parsed step reads.
    pub fn parents_of(&self, st: &Step) -> &[u32] {
        &self.parent_arena[st.parents.0 as usize..(st.parents.0 + st.parents.1) as usize]
    }

    fn word<'t>(&self, text: &'t str, t: &Token) -> &'t [u8] {
        &text.as_bytes()[t.start as usize..t.end as usize]
    }

    fn is_word(&self, text: &str, t: &Token, w: &str) -> bool {
        t.t == Tok::Word && eq_short(self.word(text, t), w.as_bytes())
    }

    fn letter_of(&self, text: &str, t: &Token) -> Option<u8> {
        if t.t == Tok::Word && t.end == t.start + 1 {
            let b = text.as_bytes()[t.start as usize];
            if b.is_ascii_alphabetic() {
                return Some(b);
            }
        }
        None
    }

    /// Parses `text` into `self.steps`.
    /// Parses `text` into `self.steps`; returns the end of the solution region.
    fn parse(&mut self, text: &str) -> usize {
        let mut toks = std::mem::take(&mut self.toks);
        self.steps.clear();
        self.helpers.clear();
        self.arena.clear();
        self.parent_arena.clear();
        let mut bind = [Binding::None; 128];
        let b = text.as_bytes();
        let mut region = text.len();
        let mut next = next_define_or_region(b, 0);
        loop {
            let d = match next {
                Next::Define(d) => d,
                Next::Region(r) => {
                    region = r;
                    break;
                }
                Next::None => break,
            };
            let name_start = d + "Define".len();
            // Fast path: the name ends at the step's `;`, which must read ` as L;`, with no `Define` or region
            // tag before it.
            let mut quick = None;
            let mut k = name_start;
            while let Some(h) = find_bytes(b, k, [b';', b'D', b'<']) {
                match b[h] {
                    b';' => {
                        let ok = h >= name_start + 6
                            && b[h - 1].is_ascii_alphabetic()
                            && b[h - 2].is_ascii_whitespace()
                            && &b[h - 4..h - 2] == b"as"
                            && b[h - 5].is_ascii_whitespace();
                        quick = ok.then_some((h - 4, b[h - 1], h));
                        break;
                    }
                    b'D' if b[h..].starts_with(b"Define") => break,
                    b'<' if is_region_tag(&b[h..]) => break,
                    _ => k = h + 1,
                }
            }
            let found = match quick {
                Some(q) => q,
                None => {
                    next = next_define_or_region(b, name_start);
                    let bound = match next {
                        Next::Define(p) | Next::Region(p) => p,
                        Next::None => text.len(),
                    };
                    match find_as_letter(b, name_start, bound) {
                        Some(f) => f,
                        None => continue,
                    }
                }
            };
            let (as_pos, letter, after) = found;
            // The body runs to the next Define (where tokenizing stops), the reverse-mode equation tail
            // (`We know`, `Answer:`; skipped up to the next Define) or the region end.
            next = match tokenize(text, after, text.len(), &mut toks) {
                Stop::Define(p) => Next::Define(p),
                Stop::Tail(p) => next_define_or_region(b, p),
                Stop::Region(p) => Next::Region(p),
                Stop::End => Next::None,
            };
            let (mut ns, mut ne) = (name_start, as_pos);
            while ns < ne && b[ns].is_ascii_whitespace() {
                ns += 1;
            }
            while ne > ns && b[ne - 1].is_ascii_whitespace() {
                ne -= 1;
            }
            if ns == ne {
                continue;
            }
            let si = self.steps.len() as u32;
            let pstart = self.parent_arena.len() as u32;
            self.steps.push(Step {
                name: (ns as u32, ne as u32),
                letter,
                parents: (pstart, 0),
                value: None,
                arith_ok: true,
                arith_unchecked: false,
                bad_ref: false,
                constant: false,
            });
            bind[letter as usize] = Binding::Node(si);
            self.parse_body(text, &toks, si, &mut bind);
            {
                let st = &mut self.steps[si as usize];
                if st.value.is_none() && st.letter == b'x' {
                    st.value = Some(Val { a: 1, b: 0 });
                    st.constant = true;
                }
            }
            let tail = &mut self.parent_arena[pstart as usize..];
            tail.sort_unstable();
            let mut w = 0usize;
            for r in 0..tail.len() {
                if r == 0 || tail[r] != tail[w - 1] {
                    tail[w] = tail[r];
                    w += 1;
                }
            }
            self.parent_arena.truncate(pstart as usize + w);
            self.steps[si as usize].parents = (pstart, w as u32);
        }
        self.toks = toks;
        region
    }

    fn lookup(&self, bind: &[Binding; 128], l: u8) -> Option<Val> {
        match bind[l as usize] {
            Binding::Node(j) => self.steps[j as usize].value,
            Binding::Helper(h) => self.helpers[h as usize].val,
            Binding::None => (l == b'x').then_some(Val { a: 1, b: 0 }),
        }
    }

    fn parse_body(&mut self, text: &str, body: &[Token], si: u32, bind: &mut [Binding; 128]) {
        let own = self.steps[si as usize].letter;
        let mut c0 = 0usize;
        while c0 < body.len() {
            let mut c1 = c0;
            while c1 < body.len() && !matches!(body[c1].t, Tok::Sym(b';') | Tok::Sym(b'.')) {
                c1 += 1;
            }
            let mut clause = &body[c0..c1];
            c0 = c1 + 1;
            if clause.first().is_some_and(|t| self.is_word(text, t, "so")) {
                clause = &clause[1..];
            }
            if clause.len() < 3 || clause[1].t != Tok::Sym(b'=') {
                continue;
            }
            let Some(lhs) = self.letter_of(text, &clause[0]) else {
                continue;
            };
            // Parts e1 .. ek.
            let rhs = &clause[2..];
            let mut parts: [(usize, usize); 8] = [(0, 0); 8];
            let mut np = 0usize;
            let mut s = 0usize;
            for (q, t) in rhs.iter().enumerate() {
                if t.t == Tok::Sym(b'=') {
                    if np < 8 {
                        parts[np] = (s, q);
                    }
                    np += 1;
                    s = q + 1;
                }
            }
            // A chain longer than the table keeps its last part in the last slot: that part is the value.
            let readable_len = np < 8;
            parts[np.min(7)] = (s, rhs.len());
            np += 1;
            let np = np.min(8);
            // Dependencies: letters read in e1.
            let e1 = &rhs[parts[0].0..parts[0].1];
            self.scratch.clear();
            let mut bad = false;
            for t in e1 {
                if let Some(l) = self.letter_of(text, t) {
                    match bind[l as usize] {
                        Binding::Node(j) => {
                            if j != si {
                                self.scratch.push(j);
                            }
                        }
                        Binding::Helper(h) => {
                            let hh = self.helpers[h as usize];
                            let (a, b) = (
                                hh.deps_start as usize,
                                (hh.deps_start + hh.deps_len) as usize,
                            );
                            for z in a..b {
                                let d = self.arena[z];
                                self.scratch.push(d);
                            }
                        }
                        Binding::None => {
                            if l != b'x' {
                                bad = true;
                            }
                        }
                    }
                }
            }
            if e1.iter().any(|t| matches!(t.t, Tok::Num(_))) {
                self.steps[si as usize].constant = true;
            }
            // Values of the parts.
            let mut vals: [Option<Val>; 8] = [None; 8];
            for (q, v) in vals.iter_mut().enumerate().take(np) {
                let (a, b) = parts[q];
                *v = self.eval(text, &rhs[a..b], bind);
            }
            let value = vals[np - 1];
            if self.opts.check_arithmetic {
                let check = if bad {
                    Check::Wrong
                } else if !readable_len || vals[..np].iter().any(Option::is_none) {
                    Check::Unknown
                } else if vals[..np].iter().any(|v| *v != value) {
                    Check::Wrong
                } else if np >= 3 {
                    let e2 = &rhs[parts[1].0..parts[1].1];
                    self.substituted(text, e1, e2, bind)
                } else {
                    Check::Right
                };
                match check {
                    Check::Right => {}
                    Check::Wrong => self.steps[si as usize].arith_ok = false,
                    Check::Unknown => self.steps[si as usize].arith_unchecked = true,
                }
            }
            if bad {
                self.steps[si as usize].bad_ref = true;
            }
            let deps_start = self.arena.len() as u32;
            self.arena.extend_from_slice(&self.scratch);
            let deps_len = self.scratch.len() as u32;
            self.parent_arena.extend_from_slice(&self.scratch);
            if lhs == own {
                self.steps[si as usize].value = value;
            } else {
                let h = self.helpers.len() as u32;
                self.helpers.push(Helper {
                    deps_start,
                    deps_len,
                    val: value,
                });
                bind[lhs as usize] = Binding::Helper(h);
            }
        }
    }

    /// `e2` is `e1` with every operand (a letter or a literal) replaced by an expression of the same value, and
    /// every other token kept: `k + f = 4 + 4`, `3 * u = (3) * (x)`, `Q + R = x + 2 + 3*x` (the paper writes
    /// a sum's operands without parentheses, so where one operand ends is found by trying every split).
    /// Together with the chain's values being equal, a wrong operand is caught even when the result is right.
    fn substituted(&self, text: &str, e1: &[Token], e2: &[Token], bind: &[Binding; 128]) -> Check {
        // Each tried split costs one evaluation; a pathological chain stops being checked rather than stalls.
        let mut budget = 512u32;
        match self.aligned(text, e1, e2, bind, &mut budget) {
            Some(true) => Check::Right,
            Some(false) => Check::Wrong,
            None => Check::Unknown,
        }
    }

    /// Whether `e2` aligns with `e1` (see [`Verifier::substituted`]); `None` when the budget ran out.
    fn aligned(
        &self,
        text: &str,
        e1: &[Token],
        e2: &[Token],
        bind: &[Binding; 128],
        budget: &mut u32,
    ) -> Option<bool> {
        let Some((t, rest)) = e1.split_first() else {
            return Some(e2.is_empty());
        };
        let want = match t.t {
            Tok::Num(v) if v >= 0 => Some(self.red(Val::num(v as i64))),
            Tok::Word => match self.letter_of(text, t) {
                Some(l) => match self.lookup(bind, l) {
                    Some(v) => Some(v),
                    None => return Some(false),
                },
                None => None,
            },
            _ => None,
        };
        let Some(want) = want else {
            let same = e2.first().is_some_and(|got| match t.t {
                Tok::Word => got.t == Tok::Word && self.word(text, got) == self.word(text, t),
                other => got.t == other,
            });
            return if same {
                self.aligned(text, rest, &e2[1..], bind, budget)
            } else {
                Some(false)
            };
        };
        let mut depth = 0i32;
        for end in 1..=e2.len() {
            match e2[end - 1].t {
                Tok::Sym(b'(') => depth += 1,
                Tok::Sym(b')') => depth -= 1,
                _ => {}
            }
            if depth < 0 {
                break;
            }
            if depth > 0 {
                continue;
            }
            if *budget == 0 {
                return None;
            }
            *budget -= 1;
            if self.eval(text, &e2[..end], bind) == Some(want)
                && self.aligned(text, rest, &e2[end..], bind, budget)?
            {
                return Some(true);
            }
        }
        Some(false)
    }

    #[inline]
    fn atom(&self, text: &str, t: &Token, bind: &[Binding; 128]) -> Option<Val> {
        match t.t {
            Tok::Num(v) => (v >= 0).then_some(Val::num(v as i64)),
            Tok::Word => self.lookup(bind, self.letter_of(text, t)?),
            _ => None,
        }
    }

    fn eval(&self, text: &str, toks: &[Token], bind: &[Binding; 128]) -> Option<Val> {
        // Fast paths for the two shapes that make up nearly every solution: `v` and `a op b`.
        match toks {
            [t] => return self.atom(text, t, bind),
            [l, op, r]
                if matches!(l.t, Tok::Num(_) | Tok::Word)
                    && matches!(r.t, Tok::Num(_) | Tok::Word) =>
            {
                let (a, c) = (self.atom(text, l, bind)?, self.atom(text, r, bind)?);
                let v = match op.t {
                    Tok::Sym(b'+') => Val {
                        a: a.a.checked_add(c.a)?,
                        b: a.b.checked_add(c.b)?,
                    },
                    Tok::Sym(b'-') => Val {
                        a: a.a.checked_sub(c.a)?,
                        b: a.b.checked_sub(c.b)?,
                    },
                    Tok::Sym(b'*') if a.a == 0 || c.a == 0 => Val {
                        a: a.a.checked_mul(c.b)?.checked_add(c.a.checked_mul(a.b)?)?,
                        b: a.b.checked_mul(c.b)?,
                    },
                    _ => return self.eval_general(text, toks, bind),
                };
                return Some(self.red(v));
            }
            _ => {}
        }
        self.eval_general(text, toks, bind)
    }

    fn eval_general(&self, text: &str, toks: &[Token], bind: &[Binding; 128]) -> Option<Val> {
        let mut pos = 0usize;
        let v = self.expr(text, toks, &mut pos, bind, 0)?;
        (pos == toks.len()).then_some(v)
    }

    /// Reduces a form modulo the modulus: both coefficients, so that forms in x compare as elements of
    /// Z_m[x] (`(x + 20) + 5` is `x + 2` mod 23).
    fn red(&self, v: Val) -> Val {
        match self.opts.modulus {
            Some(m) if m > 0 => Val {
                a: v.a.rem_euclid(m),
                b: v.b.rem_euclid(m),
            },
            _ => v,
        }
    }

    fn expr(
        &self,
        text: &str,
        t: &[Token],
        pos: &mut usize,
        bind: &[Binding; 128],
        depth: u32,
    ) -> Option<Val> {
        if depth > 32 {
            return None;
        }
        let mut acc = self.term(text, t, pos, bind, depth)?;
        while let Some(tok) = t.get(*pos) {
            let op = match tok.t {
                Tok::Sym(b'+') => 1i64,
                Tok::Sym(b'-') => -1,
                _ => break,
            };
            *pos += 1;
            let r = self.term(text, t, pos, bind, depth)?;
            acc = self.red(Val {
                a: acc.a.checked_add(op.checked_mul(r.a)?)?,
                b: acc.b.checked_add(op.checked_mul(r.b)?)?,
            });
        }
        Some(acc)
    }

    fn term(
        &self,
        text: &str,
        t: &[Token],
        pos: &mut usize,
        bind: &[Binding; 128],
        depth: u32,
    ) -> Option<Val> {
        let mut acc = self.factor(text, t, pos, bind, depth)?;
        while let Some(tok) = t.get(*pos) {
            let div = match tok.t {
                Tok::Sym(b'*') => false,
                Tok::Sym(b'/') => true,
                _ => break,
            };
            *pos += 1;
            let r = self.factor(text, t, pos, bind, depth)?;
            acc = if div {
                if acc.a != 0 || r.a != 0 || r.b == 0 || acc.b % r.b != 0 {
                    return None;
                }
                Val {
                    a: 0,
                    b: acc.b / r.b,
                }
            } else {
                if acc.a != 0 && r.a != 0 {
                    return None;
                }
                Val {
                    a: acc
                        .a
                        .checked_mul(r.b)?
                        .checked_add(r.a.checked_mul(acc.b)?)?,
                    b: acc.b.checked_mul(r.b)?,
                }
            };
            acc = self.red(acc);
        }
        Some(acc)
    }

    fn factor(
        &self,
        text: &str,
        t: &[Token],
        pos: &mut usize,
        bind: &[Binding; 128],
        depth: u32,
    ) -> Option<Val> {
        let tok = t.get(*pos)?;
        *pos += 1;
        match tok.t {
            Tok::Num(v) => (v >= 0).then_some(Val::num(v as i64)),
            Tok::Sym(b'-') => {
                let v = self.factor(text, t, pos, bind, depth + 1)?;
                Some(self.red(Val {
                    a: v.a.checked_neg()?,
                    b: v.b.checked_neg()?,
                }))
            }
            Tok::Sym(b'(') => {
                let v = self.expr(text, t, pos, bind, depth + 1)?;
                if t.get(*pos)?.t != Tok::Sym(b')') {
                    return None;
                }
                *pos += 1;
                Some(v)
            }
            Tok::Word => {
                let l = self.letter_of(text, tok)?;
                self.lookup(bind, l)
            }
            _ => None,
        }
    }

    /// Scores `completion` against `gold`.
    pub fn score(&mut self, gold: &GoldGraph, completion: &str) -> Score {
        let region = self.parse(completion);
        let n = gold.len();
        self.gidx.clear();
        self.pred_of_gold.clear();
        self.pred_of_gold.resize(n, u32::MAX);
        let mut extra = 0u32;
        for (si, st) in self.steps.iter().enumerate() {
            let raw = &completion.as_bytes()[st.name.0 as usize..st.name.1 as usize];
            let g = gold.find(raw);
            self.gidx.push(g.unwrap_or(u32::MAX));
            match g {
                Some(g) => {
                    if self.pred_of_gold[g as usize] != u32::MAX {
                        extra += 1;
                    }
                    self.pred_of_gold[g as usize] = si as u32;
                }
                None => extra += 1,
            }
        }
        let (mut value_mm, mut dep_mm, mut missing, mut arith_mm) = (0u32, 0u32, 0u32, 0u32);
        let mut arith_unchecked = 0u32;
        for g in 0..n {
            let p = self.pred_of_gold[g];
            if p == u32::MAX {
                missing += 1;
                continue;
            }
            let st = &self.steps[p as usize];
            self.scratch.clear();
            let mut unknown_parent = false;
            for &j in
                &self.parent_arena[st.parents.0 as usize..(st.parents.0 + st.parents.1) as usize]
            {
                let gj = self.gidx[j as usize];
                if gj == u32::MAX {
                    unknown_parent = true;
                } else {
                    self.scratch.push(gj);
                }
            }
            self.scratch.sort_unstable();
            self.scratch.dedup();
            let deps_ok = !unknown_parent && !st.bad_ref && {
                let gp = &gold.parents[g];
                self.scratch.len() == gp.len() && self.scratch.iter().zip(gp).all(|(a, b)| a == b)
            };
            let value_ok = st.value.is_some() && st.value == gold.values[g];
            if !deps_ok {
                dep_mm += 1;
            }
            if !value_ok {
                value_mm += 1;
            }
            if deps_ok && value_ok && self.opts.check_arithmetic {
                if !st.arith_ok {
                    arith_mm += 1;
                } else if st.arith_unchecked {
                    arith_unchecked += 1;
                }
            }
        }
        let answer = extract_answer_from(completion, region);
        let outcome = answer.is_some_and(|a| answers_equal(a, &gold.answer));
        let nn = n.max(1) as u32;
        let penalty = value_mm + dep_mm + missing + extra.min(nn) + (!outcome) as u32 + arith_mm;
        let verified = outcome && value_mm == 0 && dep_mm == 0 && missing == 0 && arith_mm == 0;
        Score {
            outcome,
            process: (1.0 - penalty as f64 / nn as f64).max(0.0),
            strict: verified && extra == 0,
            verified,
            gold_nodes: n as u32,
            predicted_nodes: self.steps.len() as u32,
            value_mismatch: value_mm,
            dependency_mismatch: dep_mm,
            missing,
            extra,
            arithmetic_mismatch: arith_mm,
            arithmetic_unchecked: arith_unchecked,
            answer_mismatch: !outcome,
            penalty,
            answer: answer.map(str::to_string),
        }
    }
}

/// Scores one completion (allocates a fresh [`Verifier`]; hold one in hot loops).
pub fn score(gold: &GoldGraph, completion: &str, opts: &VerifyOptions) -> Score {
    Verifier::new(*opts).score(gold, completion)
}

/// How a score becomes a scalar reward (paper spec §6.2; `verl/reward_fn.py` semantics).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RewardConfig {
    /// a: weight of R_out.
    pub answer_weight: f64,
    /// s: weight of R_pv.
    pub step_weight: f64,
    /// Zero the reward when the answer is right but anything in the process is penalised (extra nodes included).
    pub strict: bool,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig::OUTCOME
    }
}

impl RewardConfig {
    /// R_out only.
    pub const OUTCOME: RewardConfig = RewardConfig {
        answer_weight: 1.0,
        step_weight: 0.0,
        strict: false,
    };
    /// 0.2 R_out + 0.8 R_pv (with the code's "wrong answer -> 0").
    pub const PROCESS: RewardConfig = RewardConfig {
        answer_weight: 0.2,
        step_weight: 0.8,
        strict: false,
    };
    /// 0.5 R_out + 0.5 R_pv.
    pub const PROCESS_HALF: RewardConfig = RewardConfig {
        answer_weight: 0.5,
        step_weight: 0.5,
        strict: false,
    };
    /// R_out if R_pv = 1 (no penalty), else 0.
    pub const STRICT: RewardConfig = RewardConfig {
        answer_weight: 1.0,
        step_weight: 0.0,
        strict: true,
    };

    /// R = R_out * (a' + (1 - a') * R_pv) with a' = a / (a + s); strict zeroes any penalised process.
    pub fn reward(&self, s: &Score) -> f64 {
        if !s.outcome {
            return 0.0;
        }
        if self.strict && s.penalty > 0 {
            return 0.0;
        }
        let total = self.answer_weight + self.step_weight;
        if total <= 0.0 {
            return 0.0;
        }
        let a = self.answer_weight / total;
        (a + (1.0 - a) * s.process).clamp(0.0, 1.0)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.answer_weight >= 0.0
                && self.step_weight >= 0.0
                && self.answer_weight + self.step_weight > 0.0,
            "reward config: `answer_weight` and `step_weight` must be >= 0 and not both 0 (got {} and {})",
            self.answer_weight,
            self.step_weight
        );
        Ok(())
    }
}
