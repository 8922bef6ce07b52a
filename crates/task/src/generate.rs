//! The problem generator: GSM-Infinite's "realistic" generator (itself iGSM's algorithm), re-implemented.
//!
//! One attempt = hyper-sampling -> structure graph -> necessary graph (abstract params, topological order,
//! extra dependency edges) -> op(G) -> values and the value filter -> distractor graph -> text. An attempt that
//! fails any check is thrown away and the next one starts from the same RNG stream (rejection sampling), so a
//! problem is a pure function of `(config, spec, seed, index)`.
//!
//! Deliberate differences from the Python reference (none changes the distributions the paper relies on):
//! * the cheap checks (op(G), values) run before the distractor graph and text are built: the random draws they
//!   use are independent of the distractor stage, so only the cost changes;
//! * `drawNecessary3` removes the parent that already exists (the reference removes the last pool element by a
//!   loop-variable slip, then dedups); `addingparameter` registers the added node in the necessary graph;
//! * d=3 attributes are plain instance parameters ("average number of X per T in E"); the reference wraps them in
//!   alias nodes whose own edge op(G) does not count, which is the same count;
//! * layer-2 of d=3 connects every item type; the reference draws those edges at random.
//!
//! Reverse mode (`forwardreverse`) follows the released `reverse_generator.py` (`drawAllEquan`): the forward graph is
//! drawn as above except that small graphs (s <= 5) have layers at most 3 wide instead of at least 2; the unknown
//! `x` is the last constant-only instance parameter of the solution order; its sentence becomes "The number of X
//! exists, and its number is greater than 0", the query's value is stated ("The Q equals v"), the question asks
//! for X (so answers are 1..number_range-1), letters come from A-Z, a-z without x and X, and every step carries a
//! linear form in x written as sympy prints it, in the generator's own text: `u = x = x; so w = 3 * u = (3) * (x)
//! = 3*x`, `so b = K - x = (4) - (x) = 4 - x`, `U = x + A = x + x + 2 = 2*x + 2`. The equation tail is its
//! solver's: `Simplifying the equation: ... Move all terms to one side: ... Isolate the term with x: 1*x = 2.
//! Divide both sides by 1: x = 2 / 1. Solution: x = 2.` Samples where x cancels out (a = 0) or a product is not
//! linear are rejected.

use crate::config::{Letters, Mode, SolutionOrder, TaskConfig};
use crate::context::{Context, ContextNames};
use crate::rng::Rng;
use anyhow::{bail, ensure};
use serde::{Deserialize, Serialize};

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProblemSpec {
    /// The exact op(G) wanted.
    pub op: u32,
    pub context: Context,
    pub mode: Mode,
    /// Depth: 2 ("medium") or 3 ("hard").
    pub d: u8,
}

/// One node of a gold graph: the parameter name (node identity), its parents' names, its value as rendered in
/// the solution (`"12"`, or a linear expression like `"3*x"` in reverse mode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldNode {
    pub name: String,
    pub parents: Vec<String>,
    pub value: String,
}

/// The solution graph in solution order, and the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gold {
    pub nodes: Vec<GoldNode>,
    pub answer: i64,
}

/// A generated problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub problem: String,
    pub question: String,
    pub solution: String,
    pub op: u32,
    pub context: Context,
    pub mode: Mode,
    pub d: u8,
    pub answer: i64,
    pub gold: Gold,
    /// Generator attempts used (rejection sampling), for statistics.
    pub attempts: u32,
}

const RNG_NODE: u8 = 255;
const MAXP: usize = 64;
const MAXPAR: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// "<type> in <entity>"
    Count,
    /// "<average> per <type> in <entity>" (d=3)
    Avg,
    /// "<total> in <entity>" = sum of the entity's counts
    Total,
    /// "<total3> in <entity>" = sum over types of count * average (d=3)
    Total3,
}

#[derive(Clone, Copy, Debug)]
struct Param {
    kind: Kind,
    entity: u8,
    ty: u8,
}

/// Per-node arithmetic decided when values are drawn.
#[derive(Clone, Copy, Debug, Default)]
struct Detail {
    has_rng: bool,
    plus: bool,
    c: i64,
    minus: bool,
    drawn: bool,
}

/// Linear value `a*x + b` (a = 0 in forward mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Lin {
    a: i64,
    b: i64,
}

/// Scratch space reused across attempts (no allocation in the rejection loop once warm).
struct Work {
    entities: Vec<&'static str>,
    types: Vec<&'static str>,
    names: &'static ContextNames,
    d: u8,
    params: Vec<Param>,
    n_inst: usize,
    par: [[u8; MAXPAR]; MAXP],
    npar: [u8; MAXP],
    cons: [u64; MAXP],
    g: u64,
    topo: Vec<u8>,
    detail: [Detail; MAXP],
    val: [Lin; MAXP],
    /// Numeric values of the solution path (the reverse-mode x included).
    num: [i64; MAXP],
    pool: Vec<u8>,
    /// Abstract parameters in the order `drawNecessary1` added them.
    abs_order: Vec<u8>,
    tmp: Vec<u8>,
    weights: Vec<f64>,
    edges: Vec<(u8, u8)>,
}

#[inline]
fn bit(i: u8) -> u64 {
    1u64 << i
}

fn nth_set(mask: u64, mut k: u32) -> u8 {
    let mut m = mask;
    loop {
        let i = m.trailing_zeros();
        if k == 0 {
            return i as u8;
        }
        k -= 1;
        m &= m - 1;
    }
}

fn pick(rng: &mut Rng, mask: u64) -> u8 {
    nth_set(mask, rng.below(mask.count_ones() as usize) as u32)
}

/// Why an attempt was rejected (internal; only counted).
#[derive(Debug)]
struct Reject;

type Attempt<T> = Result<T, Reject>;

impl Work {
    fn new(context: Context, d: u8) -> Work {
        Work {
            entities: Vec::new(),
            types: Vec::new(),
            names: context.names(),
            d,
            params: Vec::new(),
            n_inst: 0,
            par: [[0; MAXPAR]; MAXP],
            npar: [0; MAXP],
            cons: [0; MAXP],
            g: 0,
            topo: Vec::new(),
            detail: [Detail::default(); MAXP],
            val: [Lin::default(); MAXP],
            num: [0; MAXP],
            pool: Vec::new(),
            abs_order: Vec::new(),
            tmp: Vec::new(),
            weights: Vec::new(),
            edges: Vec::new(),
        }
    }

    #[inline]
    fn is_abstract(&self, p: u8) -> bool {
        (p as usize) >= self.n_inst
    }

    /// Mask of the instance parameters (`0..n_inst`); abstract parameters come after them.
    fn inst_mask(&self) -> u64 {
        if self.n_inst == 64 {
            u64::MAX
        } else {
            (1u64 << self.n_inst) - 1
        }
    }

    fn parents(&self, p: u8) -> &[u8] {
        &self.par[p as usize][..self.npar[p as usize] as usize]
    }

    fn add_parent(&mut self, child: u8, parent: u8) -> Attempt<()> {
        let n = self.npar[child as usize] as usize;
        if n >= MAXPAR {
            return Err(Reject);
        }
        self.par[child as usize][n] = parent;
        self.npar[child as usize] += 1;
        if parent != RNG_NODE {
            self.cons[parent as usize] |= bit(child);
        }
        Ok(())
    }

    /// Mask of a parameter and everything it structurally needs (an abstract param's children).
    fn closure(&self, p: u8) -> u64 {
        let mut m = bit(p);
        if self.is_abstract(p) {
            for &c in self.parents(p) {
                m |= bit(c);
            }
        }
        m
    }

    fn op_of(&self, mask: u64) -> u32 {
        let mut m = mask;
        let mut op = 0;
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            op += self.npar[i] as u32;
            m &= m - 1;
        }
        op
    }

    fn push_name(&self, out: &mut String, p: u8) {
        let prm = self.params[p as usize];
        let e = self.entities[prm.entity as usize];
        match prm.kind {
            Kind::Count => {
                out.push_str(self.types[prm.ty as usize]);
                out.push_str(" in ");
            }
            Kind::Avg => {
                out.push_str(self.names.average);
                out.push_str(" per ");
                out.push_str(self.types[prm.ty as usize]);
                out.push_str(" in ");
            }
            Kind::Total => {
                out.push_str(self.names.total);
                out.push_str(" in ");
            }
            Kind::Total3 => {
                out.push_str(self.names.total3);
                out.push_str(" in ");
            }
        }
        out.push_str(e);
    }

    fn name(&self, p: u8) -> String {
        let mut s = String::with_capacity(48);
        self.push_name(&mut s, p);
        s
    }

    /// `standard_name`: "the number of <name>" unless the name starts with "average"/"total".
    fn push_standard(&self, out: &mut String, p: u8, begins: bool) {
        let kind = self.params[p as usize].kind;
        out.push_str(if begins { "The " } else { "the " });
        if kind == Kind::Count {
            out.push_str("number of ");
        }
        self.push_name(out, p);
    }
}

/// Softmax weights over widths 1..=max_width (iGSM: centres 0.1..0.9, rel = (s-1)/(ip_max-1)).
fn width_weights(s: u32, ip_max: usize, max_width: usize, out: &mut Vec<f64>) {
    let rel = if ip_max > 1 {
        (s as f64 - 1.0) / (ip_max as f64 - 1.0)
    } else {
        0.0
    };
    out.clear();
    for c in [0.1, 0.3, 0.5, 0.7, 0.9].iter().take(max_width) {
        out.push((-(rel - c) * (rel - c)).exp());
    }
}

/// Generates the problem `index` of the stream `seed`. Same inputs, same problem, on any thread.
pub fn generate(
    cfg: &TaskConfig,
    spec: &ProblemSpec,
    seed: u64,
    index: u64,
) -> anyhow::Result<Problem> {
    ensure!(
        spec.d == 2 || spec.d == 3,
        "problem spec: `d` must be 2 or 3, got {}",
        spec.d
    );
    ensure!(
        cfg.supports_op(spec.op),
        "problem spec: op {} has no strictline in the task config",
        spec.op
    );
    if spec.mode == Mode::Reverse && cfg.modulus.is_some() {
        bail!("task config: reverse (equation) mode needs plain integers; unset `modulus`");
    }
    let mut rng = Rng::new(seed, 0x9e6e_7a70, index);
    let mut w = Work::new(spec.context, spec.d);
    for attempt in 1..=cfg.max_attempts {
        if let Ok(mut p) = attempt_once(cfg, spec, &mut rng, &mut w) {
            p.attempts = attempt;
            return Ok(p);
        }
    }
    bail!(
        "no problem with op {} ({:?}, {:?}, d={}) after {} attempts; raise `max_attempts` or widen the config",
        spec.op,
        spec.context,
        spec.mode,
        spec.d,
        cfg.max_attempts
    )
}

fn attempt_once(
    cfg: &TaskConfig,
    spec: &ProblemSpec,
    rng: &mut Rng,
    w: &mut Work,
) -> Attempt<Problem> {
    let d = spec.d as usize;
    let strictline = cfg.strictline[spec.op as usize];
    // 1. Hyper-sampling (`drawAll`, force = true).
    let s = (strictline as i64 + 1) / 2;
    let n = rng.range(1, s).max(rng.range(1, s));
    let m = rng.range(n, s);
    width_weights(s as u32, cfg.ip_max, cfg.max_width, &mut w.weights);
    let mut t0 = 1 + rng.weighted(&w.weights);
    let mut t1 = 1 + rng.weighted(&w.weights);
    // Small graphs: the forward generator (`drawAll`) widens both layers to at least 2, the reverse one
    // (`drawAllEquan`) narrows them to at most 3, so a reverse problem at op 2 often has a single entity or type.
    if s <= 5 {
        if spec.mode == Mode::Reverse {
            t0 = t0.min(3);
            t1 = t1.min(3);
        } else if d == 2 {
            t0 = t0.max(2.min(cfg.max_width));
            t1 = t1.max(2.min(cfg.max_width));
        }
    }
    let (w0, w1) = (t0.min(t1), t0.max(t1));
    let lo = ((d - 1) * w0) as i64;
    let hi = (cfg.ip_max as i64).max(lo);
    let e_draw = rng.range(lo, hi).min(rng.range(lo, hi)) as usize;
    let e = if d == 2 {
        e_draw.min(w1 * w1)
    } else {
        e_draw.min(w1 * w1 + w1).min(w1 * w1)
    };

    // 2. Structure graph.
    draw_structure(rng, w, e, w0, w1);
    // 3. Parameters of the structure graph.
    build_params(w);
    // 4. Necessary graph.
    necessary1(rng, w, n as u32, m as u32)?;
    necessary2(rng, w, spec.mode == Mode::Reverse)?;
    if w.topo.len() == 2 && rng.chance(0.5) {
        adding_parameter(rng, w)?;
    }
    necessary3(rng, w, s as u32)?;
    // op(G): in-degrees (constant edges included) over the solution path.
    let mut op = 0u32;
    for &p in &w.topo {
        op += w.npar[p as usize] as u32;
    }
    if op != spec.op || op > strictline {
        return Err(Reject);
    }
    // 5. Values and the filter.
    let x = if spec.mode == Mode::Reverse {
        Some(choose_unknown(w)?)
    } else {
        None
    };
    values(cfg, rng, w, x)?;
    let query = *w.topo.last().unwrap();
    if x.is_some() && w.val[query as usize].a == 0 {
        return Err(Reject); // x cancels out: the equation says nothing about it
    }
    // 6. Distractors, then text.
    unnecessary(cfg, rng, w)?;
    render(cfg, spec, rng, w, x, op)
}

/// `drawStructure`: grow layer widths from w0 towards w1 until e edges fit, then connect.
fn draw_structure(rng: &mut Rng, w: &mut Work, e: usize, w0: usize, w1: usize) {
    let mut l = [w0, w0];
    let p = rng.f64();
    while !(l[0] == w1 && l[1] == w1) {
        let e_minus = l[1];
        let e_plus = l[0] * l[1];
        let grow = if e_plus < e {
            true
        } else if e_minus == e {
            false
        } else {
            rng.f64() < p
        };
        if !grow {
            break;
        }
        let cands = (l[0] < w1) as usize + (l[1] < w1) as usize;
        let k = rng.below(cands);
        let j = if l[0] < w1 {
            if k == 0 { 0 } else { 1 }
        } else {
            1
        };
        l[j] += 1;
    }
    let names = w.names;
    let ent_list = names.entities[rng.below(names.entities.len())];
    let ty_list = names.types[rng.below(names.types.len())];
    sample_names(rng, ent_list, l[0], &mut w.entities);
    sample_names(rng, ty_list, l[1], &mut w.types);
    // Each item type hangs off a random entity, then random extra edges until e.
    w.edges.clear();
    let mut adj = [0u8; 8]; // adj[entity] = bitmask of types
    for t in 0..l[1] {
        let en = rng.below(l[0]);
        adj[en] |= 1 << t;
        w.edges.push((en as u8, t as u8));
    }
    let target = e.min(l[0] * l[1]);
    while w.edges.len() < target {
        let en = rng.below(l[0]);
        let t = rng.below(l[1]);
        if adj[en] & (1 << t) == 0 {
            adj[en] |= 1 << t;
            w.edges.push((en as u8, t as u8));
        }
    }
    w.edges.sort_unstable();
}

fn sample_names(
    rng: &mut Rng,
    list: &'static [&'static str],
    k: usize,
    out: &mut Vec<&'static str>,
) {
    let mut idx = [0usize, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    let n = list.len();
    out.clear();
    for i in 0..k.min(n) {
        let j = i + rng.below(n - i);
        idx.swap(i, j);
        out.push(list[idx[i]]);
    }
}

/// Instance params (one per structure edge; d=3 also one attribute per edge) then abstract params per entity.
fn build_params(w: &mut Work) {
    w.params.clear();
    w.npar = [0; MAXP];
    w.cons = [0; MAXP];
    w.detail = [Detail::default(); MAXP];
    w.g = 0;
    let ne = w.edges.len();
    for &(en, t) in &w.edges {
        w.params.push(Param {
            kind: Kind::Count,
            entity: en,
            ty: t,
        });
    }
    if w.d == 3 {
        for &(en, t) in &w.edges {
            w.params.push(Param {
                kind: Kind::Avg,
                entity: en,
                ty: t,
            });
        }
    }
    w.n_inst = w.params.len();
    for en in 0..w.entities.len() as u8 {
        let id = w.params.len();
        let mut k = 0;
        for (i, &(e2, _)) in w.edges.iter().enumerate() {
            if e2 == en {
                w.par[id][k] = i as u8;
                k += 1;
            }
        }
        if k == 0 {
            continue;
        }
        w.npar[id] = k as u8;
        w.params.push(Param {
            kind: Kind::Total,
            entity: en,
            ty: 0,
        });
        if w.d == 3 {
            let id3 = w.params.len();
            let mut k3 = 0;
            for (i, &(e2, _)) in w.edges.iter().enumerate() {
                if e2 == en {
                    w.par[id3][k3] = i as u8;
                    w.par[id3][k3 + 1] = (ne + i) as u8;
                    k3 += 2;
                }
            }
            w.npar[id3] = k3 as u8;
            w.params.push(Param {
                kind: Kind::Total3,
                entity: en,
                ty: 0,
            });
        }
    }
}

/// `drawNecessary1`: add abstract params while op <= n, then instance params up to m.
fn necessary1(rng: &mut Rng, w: &mut Work, n: u32, m: u32) -> Attempt<()> {
    let mut lists: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for (i, p) in w.params.iter().enumerate() {
        match p.kind {
            Kind::Total => lists[0].push(i as u8),
            Kind::Total3 => lists[1].push(i as u8),
            _ => {}
        }
    }
    let levels: &[usize] = if w.d == 3 { &[1, 0] } else { &[0] };
    let mut g = 0u64;
    w.abs_order.clear();
    loop {
        let mut updated = false;
        for &lv in levels {
            if lists[lv].is_empty() {
                continue;
            }
            let idx = rng.below(lists[lv].len());
            let sel = lists[lv].remove(idx);
            let cand = g | w.closure(sel);
            if w.op_of(cand) <= n {
                g = cand;
                w.abs_order.push(sel);
                updated = true;
                break;
            }
        }
        if !updated {
            break;
        }
    }
    let op = w.op_of(g);
    let extra = (m as i64 - op as i64 - 1).max(0);
    for _ in 0..extra {
        let left = w.inst_mask() & !g;
        if left == 0 {
            break;
        }
        g |= bit(pick(rng, left));
    }
    if g == 0 {
        return Err(Reject);
    }
    w.g = g;
    // Consumers inside g (structural edges child -> abstract).
    let mut mm = g;
    while mm != 0 {
        let p = mm.trailing_zeros() as u8;
        mm &= mm - 1;
        if w.is_abstract(p) {
            for i in 0..w.npar[p as usize] as usize {
                let c = w.par[p as usize][i];
                w.cons[c as usize] |= bit(p);
            }
        }
    }
    Ok(())
}

/// (Next1, Next2, rest): rest = g \ topo; Next1 = rest members feeding something in topo; Next2 = rest members
/// whose consumers are all in topo.
fn next_sets(w: &Work, topo: u64) -> (u64, u64, u64) {
    let rest = w.g & !topo;
    let (mut n1, mut n2) = (0u64, 0u64);
    let mut m = rest;
    while m != 0 {
        let a = m.trailing_zeros() as usize;
        m &= m - 1;
        let c = w.cons[a] & w.g;
        if c & topo != 0 {
            n1 |= 1 << a;
        }
        if c & !topo == 0 {
            n2 |= 1 << a;
        }
    }
    (n1, n2, rest)
}

/// `samplingwithbias`: weight exp((abstract + in Next1) * |N(0,1)|).
fn biased(rng: &mut Rng, w: &mut Work, from: u64, next1: u64) -> u8 {
    w.tmp.clear();
    w.weights.clear();
    let mut m = from;
    while m != 0 {
        let a = m.trailing_zeros() as u8;
        m &= m - 1;
        let k = w.is_abstract(a) as u32 + (next1 & bit(a) != 0) as u32;
        let g = rng.gauss().abs();
        w.tmp.push(a);
        w.weights.push((k as f64 * g).exp());
    }
    let i = rng.weighted(&w.weights);
    w.tmp[i]
}

/// `drawNecessary2`: build the solution order backwards from a sink, wiring extra dependency edges.
/// With `prefer_total` (the reverse generator), the query is the first-added aggregate among the sinks when there
/// is one (a d=3 total first), so the value the problem states is usually a total.
fn necessary2(rng: &mut Rng, w: &mut Work, prefer_total: bool) -> Attempt<()> {
    let mut rev: Vec<u8> = std::mem::take(&mut w.topo);
    rev.clear();
    let mut tmask = 0u64;
    loop {
        let (n1, n2, _) = next_sets(w, tmask);
        let from = if rev.is_empty() { n2 } else { n1 & n2 };
        if from == 0 {
            w.topo = rev;
            return Err(Reject);
        }
        let preferred = if prefer_total && rev.is_empty() {
            let sink = |k: Kind| {
                w.abs_order
                    .iter()
                    .copied()
                    .find(|&a| from & bit(a) != 0 && w.params[a as usize].kind == k)
            };
            sink(Kind::Total3).or_else(|| sink(Kind::Total))
        } else {
            None
        };
        let p0 = match preferred {
            Some(p) => p,
            None => pick(rng, from),
        };
        rev.push(p0);
        tmask |= bit(p0);
        let (n1, n2, rest) = next_sets(w, tmask);
        if rest == 0 {
            break;
        }
        if n1 & n2 == 0 {
            if w.is_abstract(p0) {
                w.topo = rev;
                return Err(Reject);
            }
            let p1 = biased(rng, w, n2, n1);
            w.add_parent(p0, p1)?;
        } else if !w.is_abstract(p0) {
            let p = rng.f64();
            if rng.f64() < p {
                let p1 = biased(rng, w, rest, n1);
                w.add_parent(p0, p1)?;
            }
        }
    }
    rev.reverse();
    w.topo = rev;
    Ok(())
}

/// `addingparameter`: a two-node solution gets a third node, before the first or after the query.
fn adding_parameter(rng: &mut Rng, w: &mut Work) -> Attempt<()> {
    let topo_mask = w.topo.iter().fold(0u64, |m, &p| m | bit(p));
    let Some(item) = (0..w.n_inst as u8).find(|p| topo_mask & bit(*p) == 0) else {
        return Ok(());
    };
    w.g |= bit(item);
    if rng.chance(0.5) {
        let first = w.topo[0];
        w.add_parent(first, item)?;
        w.topo.insert(0, item);
    } else {
        let second = w.topo[1];
        w.add_parent(item, second)?;
        w.topo.push(item);
    }
    Ok(())
}

/// `drawNecessary3`: raise the op count to s and wire parents from {RNG} + topo predecessors.
fn necessary3(rng: &mut Rng, w: &mut Work, s: u32) -> Attempt<()> {
    let mut c_op = [0u32; MAXP];
    let mut m_op = [0u32; MAXP];
    let mut sum = 0u32;
    for (i, &p) in w.topo.iter().enumerate() {
        c_op[p as usize] = w.npar[p as usize] as u32;
        sum += c_op[p as usize];
        m_op[p as usize] = (i as u32).clamp(1, 3);
    }
    while sum < s {
        w.tmp.clear();
        for &p in &w.topo {
            if !w.is_abstract(p) && c_op[p as usize] < m_op[p as usize] {
                w.tmp.push(p);
            }
        }
        if w.tmp.is_empty() {
            return Err(Reject);
        }
        let p = w.tmp[rng.below(w.tmp.len())];
        c_op[p as usize] += 1;
        sum += 1;
    }
    for idx in 0..w.topo.len() {
        let item = w.topo[idx];
        if w.is_abstract(item) {
            continue;
        }
        w.pool.clear();
        w.pool.push(RNG_NODE);
        w.pool.extend_from_slice(&w.topo[..idx]);
        let c = c_op[item as usize] as i64;
        let mut dep = if c == 1 {
            if rng.chance(0.5) { 1 } else { 2 }
        } else {
            c + 1
        };
        dep = dep.min(w.pool.len() as i64);
        if w.npar[item as usize] > 0 {
            let existing = w.par[item as usize][0];
            if let Some(pos) = w.pool.iter().position(|q| *q == existing) {
                w.pool.remove(pos);
                dep -= 1;
            }
        }
        if dep == w.pool.len() as i64 {
            for i in 0..w.pool.len() {
                let q = w.pool[i];
                w.add_parent(item, q)?;
            }
        } else {
            if rng.chance(0.5) {
                w.add_parent(item, RNG_NODE)?;
                dep -= 1;
            }
            w.pool.retain(|q| *q != RNG_NODE);
            for _ in 0..dep.max(0) {
                if w.pool.is_empty() {
                    break;
                }
                let k = rng.below(w.pool.len());
                let q = w.pool.remove(k);
                w.add_parent(item, q)?;
            }
        }
    }
    Ok(())
}

/// Reverse mode: the unknown x is the last constant-only instance parameter of the solution order (the released
/// generator's `oneparameterquery` scans the order from its end), never the query.
fn choose_unknown(w: &Work) -> Attempt<u8> {
    let query = *w.topo.last().unwrap();
    w.topo
        .iter()
        .rev()
        .copied()
        .find(|&p| p != query && !w.is_abstract(p) && w.parents(p).iter().all(|q| *q == RNG_NODE))
        .ok_or(Reject)
}

fn name_allows_zero(w: &Work, p: u8) -> bool {
    let n = w.name(p);
    n.contains("average") || n.contains("total") || n.contains("all")
}

/// Values along the solution path, with the filter: > 0 (totals may be 0), <= max_value.
fn values(cfg: &TaskConfig, rng: &mut Rng, w: &mut Work, x: Option<u8>) -> Attempt<()> {
    let nr = cfg.number_range;
    let md = cfg.modulus;
    let red = |v: i64| -> i64 { if let Some(m) = md { v.rem_euclid(m) } else { v } };
    let mut num = [0i64; MAXP];
    for ti in 0..w.topo.len() {
        let p = w.topo[ti];
        let pu = p as usize;
        let (value, lin) = if w.is_abstract(p) {
            let kind = w.params[pu].kind;
            let ps = w.parents(p);
            let mut acc = 0i64;
            let mut lin = Lin::default();
            if kind == Kind::Total {
                for &c in ps {
                    acc = red(acc + num[c as usize]);
                    lin.a += w.val[c as usize].a;
                    lin.b += w.val[c as usize].b;
                }
            } else {
                for pair in ps.chunks(2) {
                    let (a, b) = (pair[0] as usize, pair[1] as usize);
                    acc = red(acc + red(num[a] * num[b]));
                    let (la, lb) = (w.val[a], w.val[b]);
                    if la.a != 0 && lb.a != 0 {
                        return Err(Reject); // not linear in x
                    }
                    lin.a += la.a * lb.b + lb.a * la.b;
                    lin.b += la.b * lb.b;
                }
            }
            (acc, lin)
        } else {
            let mut det = Detail::default();
            let mut k = 0usize;
            let mut q = [0u8; MAXPAR];
            for &r in w.parents(p) {
                if r == RNG_NODE {
                    det.has_rng = true;
                } else {
                    q[k] = r;
                    k += 1;
                }
            }
            if det.has_rng {
                det.plus = rng.chance(0.5);
                det.c = if det.plus {
                    rng.range(1, nr - 1)
                } else {
                    rng.range(2, nr - 1)
                };
            }
            let (mut v, mut lin) = match k {
                0 => {
                    let c = if det.has_rng {
                        det.c
                    } else {
                        rng.range(1, nr - 1)
                    };
                    det.c = c;
                    (c, Lin { a: 0, b: c })
                }
                1 => (num[q[0] as usize], w.val[q[0] as usize]),
                2 => {
                    det.minus = rng.chance(0.5);
                    let (a, b) = (q[0] as usize, q[1] as usize);
                    let (la, lb) = (w.val[a], w.val[b]);
                    if det.minus {
                        (
                            red(num[a] - num[b]),
                            Lin {
                                a: la.a - lb.a,
                                b: la.b - lb.b,
                            },
                        )
                    } else {
                        (
                            red(num[a] + num[b]),
                            Lin {
                                a: la.a + lb.a,
                                b: la.b + lb.b,
                            },
                        )
                    }
                }
                _ => {
                    let mut acc = 0i64;
                    let mut lin = Lin::default();
                    for &r in &q[..k] {
                        acc = red(acc + num[r as usize]);
                        lin.a += w.val[r as usize].a;
                        lin.b += w.val[r as usize].b;
                    }
                    (acc, lin)
                }
            };
            if det.has_rng && k > 0 {
                if det.plus {
                    v = red(det.c + v);
                    lin.b += det.c;
                } else {
                    v = red(det.c * v);
                    lin = Lin {
                        a: lin.a * det.c,
                        b: lin.b * det.c,
                    };
                }
            }
            det.drawn = true;
            w.detail[pu] = det;
            if Some(p) == x {
                lin = Lin { a: 1, b: 0 };
            }
            (v, lin)
        };
        if value < 0 || value > cfg.max_value || (value == 0 && !name_allows_zero(w, p)) {
            return Err(Reject);
        }
        num[pu] = value;
        w.val[pu] = if x.is_some() {
            lin
        } else {
            Lin { a: 0, b: value }
        };
    }
    w.num = num;
    Ok(())
}

/// `drawUnnecessary`: every remaining instance parameter of the structure graph (up to `max_distractors`) gets
/// 1-4 random parents from {RNG} + an independent list, or {RNG} + the graph so far.
fn unnecessary(cfg: &TaskConfig, rng: &mut Rng, w: &mut Work) -> Attempt<()> {
    let inst_mask = w.inst_mask();
    let mut remaining = inst_mask & !w.g;
    let mut ind: Vec<u8> = Vec::new();
    let mut added = 0usize;
    let cap = cfg.max_distractors.unwrap_or(usize::MAX);
    let mut pool: Vec<u8> = Vec::new();
    let mut sel: Vec<u8> = Vec::new();
    while remaining != 0 && added < cap {
        // K: the graph so far plus every abstract parameter computable from it.
        let mut k_mask = w.g;
        for a in w.n_inst..w.params.len() {
            if w.closure(a as u8) & !bit(a as u8) & w.g != 0 {
                k_mask |= bit(a as u8);
            }
        }
        let a = pick(rng, remaining);
        remaining &= !bit(a);
        w.g |= bit(a);
        added += 1;
        pool.clear();
        if rng.chance(0.5) {
            pool.extend_from_slice(&ind);
            ind.push(a);
        } else {
            let mut m = k_mask;
            while m != 0 {
                let b = m.trailing_zeros() as u8;
                m &= m - 1;
                // An aggregate over `a` itself would make the text circular.
                if !(w.is_abstract(b) && w.closure(b) & bit(a) != 0) {
                    pool.push(b);
                }
            }
        }
        pool.push(RNG_NODE);
        let mut dep = 1usize;
        while dep < pool.len().min(4) {
            if rng.chance(0.5) {
                dep += 1;
            } else {
                break;
            }
        }
        sel.clear();
        if dep == pool.len() {
            sel.extend_from_slice(&pool);
        } else {
            let mut dep = dep as i64;
            if rng.chance(0.5) {
                sel.push(RNG_NODE);
                dep -= 1;
            }
            pool.retain(|q| *q != RNG_NODE);
            for _ in 0..dep.max(0) {
                let k = rng.below(pool.len());
                sel.push(pool.remove(k));
            }
        }
        for &b in &sel {
            if b != RNG_NODE && w.is_abstract(b) && w.g & bit(b) == 0 {
                let cl = w.closure(b);
                let new_children = (cl & !w.g & inst_mask).count_ones() as usize;
                added += new_children;
                w.g |= cl;
                remaining &= !cl;
            }
            w.add_parent(a, b)?;
        }
    }
    Ok(())
}

/// Variable letters: random without replacement from A-Z a-z, or sequential; `x` is reserved in reverse mode.
struct LetterPool {
    left: Vec<u8>,
    sequential: bool,
}

impl LetterPool {
    fn new(style: Letters, reserve_x: bool) -> LetterPool {
        let mut left: Vec<u8> = (b'A'..=b'Z')
            .chain(b'a'..=b'z')
            // The released reverse generator draws from A-Z, a-z without x and X.
            .filter(|c| !(reserve_x && (*c == b'x' || *c == b'X')))
            .collect();
        if style == Letters::Sequential {
            left.reverse();
        }
        LetterPool {
            left,
            sequential: style == Letters::Sequential,
        }
    }
    fn take(&mut self, rng: &mut Rng) -> Attempt<u8> {
        if self.left.is_empty() {
            return Err(Reject);
        }
        if self.sequential {
            Ok(self.left.pop().unwrap())
        } else {
            let i = rng.below(self.left.len());
            Ok(self.left.swap_remove(i))
        }
    }
}

/// Arithmetic on displayed values (reduced modulo the modulus in forward mode).
#[derive(Clone, Copy)]
struct Arith {
    modulus: Option<i64>,
}

impl Arith {
    fn red(self, l: Lin) -> Lin {
        match self.modulus {
            Some(m) if l.a == 0 => Lin {
                a: 0,
                b: l.b.rem_euclid(m),
            },
            _ => l,
        }
    }
    fn apply(self, x: Lin, op: u8, y: Lin) -> Lin {
        let r = match op {
            b'+' => Lin {
                a: x.a + y.a,
                b: x.b + y.b,
            },
            b'-' => Lin {
                a: x.a - y.a,
                b: x.b - y.b,
            },
            _ => Lin {
                a: x.a * y.b + y.a * x.b,
                b: x.b * y.b,
            },
        };
        self.red(r)
    }
}

/// `3*x + 2`, `x`, `-x - 1`, `3 - x`, `12`: a form as sympy prints it (the released generator prints its forms with
/// sympy), whose one departure from `a*x + b` order is a positive constant first when the x term is negative.
fn push_lin(out: &mut String, l: Lin) {
    use std::fmt::Write;
    if l.a == 0 {
        let _ = write!(out, "{}", l.b);
        return;
    }
    let term = |out: &mut String, a: i64| match a {
        1 => out.push('x'),
        -1 => out.push_str("-x"),
        a => {
            let _ = write!(out, "{a}*x");
        }
    };
    if l.a < 0 && l.b > 0 {
        let _ = write!(out, "{} - ", l.b);
        term(out, -l.a);
        return;
    }
    term(out, l.a);
    if l.b > 0 {
        let _ = write!(out, " + {}", l.b);
    } else if l.b < 0 {
        let _ = write!(out, " - {}", -l.b);
    }
}

/// A value used as an operand: bare when it is a plain non-negative number, `x` or `k*x` (k > 0), else in
/// parentheses.
fn push_operand(out: &mut String, l: Lin) {
    let bare = (l.a == 0 && l.b >= 0) || (l.b == 0 && l.a > 0);
    if bare {
        push_lin(out, l);
    } else {
        out.push('(');
        push_lin(out, l);
        out.push(')');
    }
}

/// One operand of an assignment: a variable (letter and value) or a literal constant.
#[derive(Clone, Copy)]
enum Operand {
    Var(u8, Lin),
    Const(i64),
}

impl Operand {
    fn value(self) -> Lin {
        match self {
            Operand::Var(_, v) => v,
            Operand::Const(c) => Lin { a: 0, b: c },
        }
    }
}

/// `so L = A + B = 3 + 4 = 7`; a copy is `L = A = 3`; a literal is `L = 3`. With `rev` (reverse mode), the
/// released reverse generator's text: a sum shows its operands' forms as they are (`x + 2 + 3*x`), a difference
/// and a product put each in parentheses (`(4) - (x)`, `(3) * (x + 2)`).
fn push_assign(
    out: &mut String,
    rev: bool,
    so: bool,
    lhs: u8,
    a: Operand,
    op: Option<(u8, Operand)>,
    result: Lin,
) {
    if so {
        out.push_str("so ");
    }
    out.push(lhs as char);
    out.push_str(" = ");
    let push_sym = |out: &mut String, o: Operand| match o {
        Operand::Var(c, _) => out.push(c as char),
        Operand::Const(c) => {
            use std::fmt::Write;
            let _ = write!(out, "{c}");
        }
    };
    match (a, op) {
        (Operand::Const(_), None) => {}
        (a, None) => {
            push_sym(out, a);
            out.push_str(" = ");
        }
        (a, Some((o, b))) => {
            push_sym(out, a);
            out.push(' ');
            out.push(o as char);
            out.push(' ');
            push_sym(out, b);
            out.push_str(" = ");
            let shown = |out: &mut String, v: Lin| {
                if !rev {
                    push_operand(out, v);
                } else if o == b'+' {
                    push_lin(out, v);
                } else {
                    out.push('(');
                    push_lin(out, v);
                    out.push(')');
                }
            };
            shown(out, a.value());
            out.push(' ');
            out.push(o as char);
            out.push(' ');
            shown(out, b.value());
            out.push_str(" = ");
        }
    }
    push_lin(out, result);
}

fn render(
    cfg: &TaskConfig,
    spec: &ProblemSpec,
    rng: &mut Rng,
    w: &mut Work,
    x: Option<u8>,
    op: u32,
) -> Attempt<Problem> {
    let ar = Arith {
        modulus: cfg.modulus,
    };
    let rev = x.is_some();
    // The problem's sentences: one per instance parameter of the structure graph (ascending), plus the
    // reverse-mode statement of the query's value. `slot[i]` is sentence i's place in the problem: drawn here
    // when the solution follows the problem's order, else by the shuffle at the end (the paper's draw order).
    let mentioned: Vec<u8> = (0..w.n_inst as u8).filter(|p| w.g & bit(*p) != 0).collect();
    let n_sentences = mentioned.len() + x.is_some() as usize;
    let slot: Option<Vec<usize>> = match cfg.solution_order {
        SolutionOrder::Generator => None,
        SolutionOrder::Problem => {
            let mut slot: Vec<usize> = (0..n_sentences).collect();
            rng.shuffle(&mut slot);
            let mut place = [usize::MAX; MAXP];
            for (i, &p) in mentioned.iter().enumerate() {
                place[p as usize] = slot[i];
            }
            problem_order(w, &place);
            Some(slot)
        }
    };
    let mut letters = LetterPool::new(cfg.letters, x.is_some());
    let mut letter = [0u8; MAXP];
    let mut sol = String::with_capacity(64 + 90 * w.topo.len());
    let mut nodes: Vec<GoldNode> = Vec::with_capacity(w.topo.len());
    let query = *w.topo.last().unwrap();
    if let Some(xp) = x {
        letter[xp as usize] = b'x';
        sol.push_str("The question is difficult, so we use equations to solve it. ");
    }
    let mut q = [0u8; MAXPAR];
    for ti in 0..w.topo.len() {
        let p = w.topo[ti];
        // The unknown is defined where the solution order reaches it (not always first).
        if Some(p) == x {
            sol.push_str("Define ");
            w.push_name(&mut sol, p);
            sol.push_str(" as x; we don't know its value yet but will find it out later. ");
            nodes.push(GoldNode {
                name: w.name(p),
                parents: Vec::new(),
                value: "x".into(),
            });
            continue;
        }
        let pu = p as usize;
        let own = letters.take(rng)?;
        letter[pu] = own;
        sol.push_str("Define ");
        w.push_name(&mut sol, p);
        sol.push_str(" as ");
        sol.push(own as char);
        sol.push_str("; ");
        let var = |r: u8| Operand::Var(letter[r as usize], w.val[r as usize]);
        let mut parents_out: Vec<String> = Vec::new();
        let kind = w.params[pu].kind;
        match kind {
            Kind::Count | Kind::Avg => {
                let det = w.detail[pu];
                let mut k = 0;
                for &r in w.parents(p) {
                    if r != RNG_NODE {
                        q[k] = r;
                        k += 1;
                        parents_out.push(w.name(r));
                    }
                }
                let rng_step = det.has_rng && k > 0;
                let core_n = match k {
                    0..=2 => 1,
                    _ => k - 1,
                };
                let total = core_n + rng_step as usize;
                let mut step = 0usize;
                let next_lhs =
                    |step: usize, rng: &mut Rng, letters: &mut LetterPool| -> Attempt<u8> {
                        if step + 1 == total {
                            Ok(own)
                        } else {
                            letters.take(rng)
                        }
                    };
                let mut acc: Operand;
                match k {
                    0 => {
                        let v = Lin { a: 0, b: det.c };
                        push_assign(&mut sol, rev, true, own, Operand::Const(det.c), None, v);
                        acc = Operand::Var(own, v);
                    }
                    1 => {
                        let l = next_lhs(step, rng, &mut letters)?;
                        let v = w.val[q[0] as usize];
                        push_assign(&mut sol, rev, l == own, l, var(q[0]), None, v);
                        acc = Operand::Var(l, v);
                    }
                    2 => {
                        let l = next_lhs(step, rng, &mut letters)?;
                        let o = if det.minus { b'-' } else { b'+' };
                        let v = ar.apply(w.val[q[0] as usize], o, w.val[q[1] as usize]);
                        push_assign(
                            &mut sol,
                            rev,
                            l == own,
                            l,
                            var(q[0]),
                            Some((o, var(q[1]))),
                            v,
                        );
                        acc = Operand::Var(l, v);
                    }
                    _ => {
                        acc = var(q[0]);
                        for &qi in &q[1..k] {
                            if step > 0 {
                                sol.push_str("; ");
                            }
                            let l = next_lhs(step, rng, &mut letters)?;
                            let v = ar.apply(acc.value(), b'+', w.val[qi as usize]);
                            push_assign(&mut sol, rev, l == own, l, acc, Some((b'+', var(qi))), v);
                            acc = Operand::Var(l, v);
                            step += 1;
                        }
                    }
                }
                if rng_step {
                    sol.push_str("; ");
                    let o = if det.plus { b'+' } else { b'*' };
                    let v = ar.apply(Lin { a: 0, b: det.c }, o, acc.value());
                    push_assign(
                        &mut sol,
                        rev,
                        true,
                        own,
                        Operand::Const(det.c),
                        Some((o, acc)),
                        v,
                    );
                }
            }
            Kind::Total => {
                let ps = w.parents(p);
                for &c in ps {
                    parents_out.push(w.name(c));
                }
                if ps.len() == 1 {
                    push_assign(
                        &mut sol,
                        rev,
                        true,
                        own,
                        var(ps[0]),
                        None,
                        w.val[ps[0] as usize],
                    );
                } else {
                    let mut acc = var(ps[0]);
                    for i in 1..ps.len() {
                        if i > 1 {
                            sol.push_str("; ");
                        }
                        let last = i + 1 == ps.len();
                        let l = if last { own } else { letters.take(rng)? };
                        let v = ar.apply(acc.value(), b'+', w.val[ps[i] as usize]);
                        push_assign(&mut sol, rev, last, l, acc, Some((b'+', var(ps[i]))), v);
                        acc = Operand::Var(l, v);
                    }
                }
            }
            Kind::Total3 => {
                let ps: Vec<u8> = w.parents(p).to_vec();
                for &c in &ps {
                    parents_out.push(w.name(c));
                }
                let pairs = ps.len() / 2;
                let mut prods: Vec<Operand> = Vec::with_capacity(pairs);
                for i in 0..pairs {
                    if i > 0 {
                        sol.push_str("; ");
                    }
                    let l = if pairs == 1 { own } else { letters.take(rng)? };
                    let (cnt, avg) = (ps[2 * i], ps[2 * i + 1]);
                    let v = ar.apply(w.val[cnt as usize], b'*', w.val[avg as usize]);
                    push_assign(
                        &mut sol,
                        rev,
                        pairs == 1,
                        l,
                        var(cnt),
                        Some((b'*', var(avg))),
                        v,
                    );
                    prods.push(Operand::Var(l, v));
                }
                let mut acc = prods[0];
                for (i, pr) in prods.iter().enumerate().skip(1) {
                    sol.push_str("; ");
                    let l = if i + 1 == pairs {
                        own
                    } else {
                        letters.take(rng)?
                    };
                    let v = ar.apply(acc.value(), b'+', pr.value());
                    push_assign(&mut sol, rev, false, l, acc, Some((b'+', *pr)), v);
                    acc = Operand::Var(l, v);
                }
            }
        }
        sol.push_str(". ");
        let mut vs = String::new();
        push_lin(&mut vs, w.val[pu]);
        nodes.push(GoldNode {
            name: w.name(p),
            parents: parents_out,
            value: vs,
        });
    }
    let answer;
    if let Some(xp) = x {
        use std::fmt::Write;
        let v = w.num[query as usize];
        let e = w.val[query as usize];
        let xv = w.num[xp as usize];
        answer = xv;
        let mut es = String::new();
        push_lin(&mut es, e);
        // The released generator's equation solver: every step is written out, `1*x` and a division by 1
        // included.
        let _ = write!(
            sol,
            "We know {} = {v}, so we have {es} = {v} and we solve it through the following steps: Simplifying the equation: {es} = {v}. Move all terms to one side: ",
            letter[query as usize] as char
        );
        push_lin(&mut sol, Lin { a: e.a, b: e.b - v });
        let _ = write!(
            sol,
            " = 0. Isolate the term with x: {a}*x = {r}. Divide both sides by {a}: x = {r} / {a}. Solution: x = {xv}. Answer: {xv}.",
            a = e.a,
            r = v - e.b
        );
    } else {
        use std::fmt::Write;
        answer = w.num[query as usize];
        let _ = write!(sol, "Answer: {answer}.");
    }

    // Problem text: one sentence per instance parameter, shuffled.
    let mut sentences: Vec<String> = Vec::with_capacity(n_sentences);
    for &p in &mentioned {
        sentences.push(sentence(cfg, rng, w, p, x));
    }
    if x.is_some() {
        use std::fmt::Write;
        let mut s = String::with_capacity(64);
        w.push_standard(&mut s, query, true);
        let _ = write!(s, " equals {}", w.num[query as usize]);
        sentences.push(s);
    }
    match slot {
        None => rng.shuffle(&mut sentences),
        Some(slot) => {
            let mut placed = vec![String::new(); n_sentences];
            for (s, k) in sentences.into_iter().zip(slot) {
                placed[k] = s;
            }
            sentences = placed;
        }
    }
    let mut problem = String::with_capacity(sentences.iter().map(|s| s.len() + 2).sum());
    for (i, s) in sentences.iter().enumerate() {
        if i > 0 {
            problem.push(' ');
        }
        problem.push_str(s);
        problem.push('.');
    }
    let target = x.unwrap_or(query);
    let prm = w.params[target as usize];
    let question = if prm.kind == Kind::Count {
        format!(
            "How many {} does {} have?",
            w.types[prm.ty as usize], w.entities[prm.entity as usize]
        )
    } else {
        format!("What is the {}?", w.name(target))
    };
    Ok(Problem {
        problem,
        question,
        solution: sol,
        op,
        context: spec.context,
        mode: spec.mode,
        d: spec.d,
        answer,
        gold: Gold { nodes, answer },
        attempts: 0,
    })
}

/// Reorders the solution path `w.topo` (SolutionOrder::Problem): repeatedly takes, of the steps whose
/// parents are all taken, the one whose sentence comes first in the problem (`place`, by parameter); steps
/// without a sentence (totals) as soon as they are ready; the query stays last. A total's parts are summed in
/// the order they were defined.
fn problem_order(w: &mut Work, place: &[usize; MAXP]) {
    let query = *w.topo.last().unwrap();
    let on_path = w.topo.iter().fold(0u64, |m, &p| m | bit(p));
    let mut rest: Vec<u8> = w.topo[..w.topo.len() - 1].to_vec();
    let mut done = 0u64;
    let mut order = Vec::with_capacity(w.topo.len());
    while !rest.is_empty() {
        let ready = |p: u8| {
            w.parents(p)
                .iter()
                .all(|&q| q == RNG_NODE || on_path & bit(q) == 0 || done & bit(q) != 0)
        };
        let key = |p: u8| {
            if w.is_abstract(p) {
                0
            } else {
                place[p as usize].saturating_add(1)
            }
        };
        let i = (0..rest.len())
            .filter(|&i| ready(rest[i]))
            .min_by_key(|&i| key(rest[i]))
            .expect("the solution path is acyclic");
        let p = rest.remove(i);
        done |= bit(p);
        order.push(p);
    }
    order.push(query);
    // A total adds its parts in the order they were defined (the generator's parent order is arbitrary).
    let mut pos = [usize::MAX; MAXP];
    for (i, &p) in order.iter().enumerate() {
        pos[p as usize] = i;
    }
    for &p in &order {
        if w.params[p as usize].kind == Kind::Total {
            let n = w.npar[p as usize] as usize;
            w.par[p as usize][..n]
                .sort_by_key(|&q| pos.get(q as usize).copied().unwrap_or(usize::MAX));
        }
    }
    w.topo = order;
}

/// `generate_sentence`: "The number of P equals [c [plus|times]] [Q | the sum of Q and R | the difference between
/// Q and R | the sum of Q, R, and S]".
fn sentence(cfg: &TaskConfig, rng: &mut Rng, w: &Work, p: u8, x: Option<u8>) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(96);
    w.push_standard(&mut s, p, true);
    if Some(p) == x {
        s.push_str(if w.params[p as usize].kind == Kind::Avg {
            " is greater than 0"
        } else {
            " exists, and its number is greater than 0"
        });
        return s;
    }
    s.push_str(" equals");
    let mut det = w.detail[p as usize];
    let mut q = [0u8; MAXPAR];
    let mut k = 0;
    let mut has_rng = false;
    for &r in w.parents(p) {
        if r == RNG_NODE {
            has_rng = true;
        } else {
            q[k] = r;
            k += 1;
        }
    }
    if !det.drawn {
        det.has_rng = has_rng;
        let nr = cfg.number_range;
        if has_rng {
            det.plus = rng.chance(0.5);
            det.c = if det.plus {
                rng.range(1, nr - 1)
            } else {
                rng.range(2, nr - 1)
            };
        } else if k == 0 {
            det.c = rng.range(1, nr - 1);
        }
        if k == 2 {
            det.minus = rng.chance(0.5);
        }
    }
    if det.has_rng || k == 0 {
        let _ = write!(s, " {}", det.c);
        if k > 0 {
            s.push_str(if det.plus { " plus" } else { " times" });
        }
    }
    match k {
        0 => {}
        1 => {
            s.push(' ');
            w.push_standard(&mut s, q[0], false);
        }
        2 => {
            s.push_str(if det.minus {
                " the difference between "
            } else {
                " the sum of "
            });
            w.push_standard(&mut s, q[0], false);
            s.push_str(" and ");
            w.push_standard(&mut s, q[1], false);
        }
        _ => {
            s.push_str(" the sum of ");
            for &r in &q[..k - 1] {
                w.push_standard(&mut s, r, false);
                s.push_str(", ");
            }
            s.push_str("and ");
            w.push_standard(&mut s, q[k - 1], false);
        }
    }
    s
}
