//! Packed training data: documents (token ids + a per-token loss flag), in an order shuffled afresh each epoch,
//! are laid into fixed blocks of `seq_len + 1` tokens (inputs and next-token targets overlap by one). Documents
//! share blocks and, as in the paper's packing (spec §4.3), attend across boundaries unless the trainer's
//! `document_mask` is on ([`document_starts`]); every document ends with `[EOS]`. Two layouts ([`Packing`]):
//! * `whole` (default): documents are bin-packed whole into blocks (best-fit decreasing; the paper's code packs
//!   first-fit decreasing, spec §4.3), the rest of a block is `[PAD]` with loss weight 0, and each epoch reads
//!   the blocks in a new order. No document is cut, so every solution token is trained with its problem in view.
//! * `stream`: one concatenated stream cut every `seq_len` tokens (this crate's first layout). A cut document's
//!   solution is then trained without its problem; with ~135-token problems in 256-token blocks that is about
//!   half the documents, and the model learns to guess entities it cannot see (crates/lm/README.md).
//!
//! The cursor (epoch, next block) is the whole reading state, so resuming a run reads exactly the same blocks.

use crate::rng::Rng;
use crate::tokenizer::{EOS_ID, PAD_ID, SOLUTION_ID};
use serde::{Deserialize, Serialize};

/// Which target tokens the loss counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossOn {
    /// Every token (the paper's pre-training and mid-training loss).
    All,
    /// Only the tokens after `<solution>`, through the closing `[EOS]` (solution + answer; learnability.md).
    Solution,
}

impl std::str::FromStr for LossOn {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "all" => Ok(LossOn::All),
            "solution" => Ok(LossOn::Solution),
            _ => anyhow::bail!("unknown loss_on `{s}`; expected `all` or `solution`"),
        }
    }
}

/// Per-token loss flags of one document for `loss_on`.
pub fn loss_flags(ids: &[u32], loss_on: LossOn) -> Vec<bool> {
    match loss_on {
        LossOn::All => vec![true; ids.len()],
        LossOn::Solution => {
            let mut on = false;
            ids.iter()
                .map(|&t| {
                    let here = on;
                    if t == SOLUTION_ID {
                        on = true;
                    }
                    if t == EOS_ID {
                        on = false;
                    }
                    here
                })
                .collect()
        }
    }
}

/// How documents are laid into blocks (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Packing {
    /// Whole documents only; the tail of a block that the next document does not fit in is padding.
    #[default]
    Whole,
    /// One stream cut every `seq_len` tokens; documents may straddle two blocks.
    Stream,
}

impl std::str::FromStr for Packing {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "whole" => Ok(Packing::Whole),
            "stream" => Ok(Packing::Stream),
            _ => anyhow::bail!("unknown packing `{s}`; expected `whole` or `stream`"),
        }
    }
}

/// For every input position of `inputs` (`[rows, seq_len]` row-major), the first position of its row that
/// belongs to the same document: a document ends with the input `[EOS]`, so the position after it starts the
/// next one. With these as the lower bound of each query's keys, attention stays inside a document
/// (`TrainConfig::document_mask`); the trailing padding of a block forms its own document.
pub fn document_starts(inputs: &[i32], seq_len: usize) -> Vec<usize> {
    assert!(seq_len > 0 && inputs.len().is_multiple_of(seq_len));
    let mut starts = Vec::with_capacity(inputs.len());
    for row in inputs.chunks(seq_len) {
        let mut start = 0;
        for (i, &tok) in row.iter().enumerate() {
            starts.push(start);
            if tok == EOS_ID as i32 {
                start = i + 1;
            }
        }
    }
    starts
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub block: usize,
}

/// One batch on the host: `inputs`/`targets` `[rows, seq_len]` row-major, `weights` 0/1 for the loss.
#[derive(Clone, Debug)]
pub struct Batch {
    pub rows: usize,
    pub seq_len: usize,
    pub inputs: Vec<i32>,
    pub targets: Vec<i32>,
    pub weights: Vec<f32>,
}

impl Batch {
    /// Splits the rows into `n` equal consecutive shards (`n` must divide `rows`).
    pub fn split(&self, n: usize) -> Vec<Batch> {
        assert!(
            n > 0 && self.rows.is_multiple_of(n),
            "{n} shards of {} rows",
            self.rows
        );
        let (r, len) = (self.rows / n, self.rows / n * self.seq_len);
        (0..n)
            .map(|i| Batch {
                rows: r,
                seq_len: self.seq_len,
                inputs: self.inputs[i * len..(i + 1) * len].to_vec(),
                targets: self.targets[i * len..(i + 1) * len].to_vec(),
                weights: self.weights[i * len..(i + 1) * len].to_vec(),
            })
            .collect()
    }
}

pub struct PackedData {
    docs: Vec<(Vec<u32>, Vec<bool>)>,
    seq_len: usize,
    seed: u64,
    shuffle: bool,
    packing: Packing,
    /// The current epoch's stream (rebuilt when the epoch changes). With `Whole` packing it is already padded,
    /// so block `k` is `stream[k * (seq_len + 1)..][..seq_len + 1]`; with `Stream`, `stream[k * seq_len..]`.
    stream: Vec<(u32, bool)>,
    stream_epoch: Option<u64>,
    /// Streams built so far (one per epoch entered; the tests count them).
    stream_builds: u64,
    /// `Whole` packing: each block's (document, first token) pieces, fixed for the run; epochs shuffle blocks.
    bins: Vec<Vec<(usize, usize)>>,
    /// Loss weight of the tokens that `loss_on` leaves out (prompt tokens under `Solution`); padding weighs 0.
    off_weight: f32,
    pub cursor: Cursor,
}

impl PackedData {
    /// `docs` must each end with `[EOS]` (appended here when missing). `shuffle = false` keeps the order
    /// (for held-out data, so evaluation always reads the same blocks).
    pub fn new(
        docs: Vec<Vec<u32>>,
        loss_on: LossOn,
        packing: Packing,
        seq_len: usize,
        seed: u64,
        shuffle: bool,
    ) -> Self {
        assert!(!docs.is_empty(), "no documents");
        let docs = docs
            .into_iter()
            .map(|mut d| {
                if d.last() != Some(&EOS_ID) {
                    d.push(EOS_ID);
                }
                let flags = loss_flags(&d, loss_on);
                (d, flags)
            })
            .collect();
        PackedData {
            docs,
            seq_len,
            seed,
            shuffle,
            packing,
            stream: vec![],
            stream_epoch: None,
            stream_builds: 0,
            bins: vec![],
            off_weight: 0.0,
            cursor: Cursor { epoch: 0, block: 0 },
        }
    }

    /// Gives the tokens outside the loss mask (the prompt, under [`LossOn::Solution`]) loss weight `w`
    /// instead of 0: an auxiliary signal from predicting the problem text. Padding stays at 0.
    pub fn with_off_weight(mut self, w: f32) -> Self {
        self.off_weight = w;
        self
    }

    pub fn num_tokens(&self) -> usize {
        self.docs.iter().map(|d| d.0.len()).sum()
    }

    /// Full blocks per epoch (the same in every epoch: an epoch only reorders the documents or blocks).
    pub fn blocks_per_epoch(&mut self) -> usize {
        // Any epoch's stream will do; building epoch 0's here once rebuilt two streams per batch past epoch 0.
        if self.stream_epoch.is_none() {
            self.ensure_stream(0);
        }
        self.blocks_in_stream()
    }

    fn blocks_in_stream(&self) -> usize {
        match self.packing {
            Packing::Stream => self.stream.len().saturating_sub(1) / self.seq_len,
            Packing::Whole => self.stream.len() / (self.seq_len + 1),
        }
    }

    fn ensure_stream(&mut self, epoch: u64) {
        if self.stream_epoch == Some(epoch) {
            return;
        }
        let epoch_rng = || Rng::new(self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.stream.clear();
        match self.packing {
            Packing::Stream => {
                let mut order: Vec<usize> = (0..self.docs.len()).collect();
                if self.shuffle {
                    epoch_rng().shuffle(&mut order);
                }
                for i in order {
                    let (ids, flags) = &self.docs[i];
                    self.stream
                        .extend(ids.iter().copied().zip(flags.iter().copied()));
                }
            }
            Packing::Whole => {
                let block = self.seq_len + 1;
                if self.bins.is_empty() {
                    self.bins = best_fit_decreasing(&self.docs, block);
                }
                let mut order: Vec<usize> = (0..self.bins.len()).collect();
                if self.shuffle {
                    epoch_rng().shuffle(&mut order);
                }
                for b in order {
                    let start = self.stream.len();
                    for &(doc, from) in &self.bins[b] {
                        let (ids, flags) = &self.docs[doc];
                        let to = ids.len().min(from + block);
                        self.stream.extend(
                            ids[from..to]
                                .iter()
                                .copied()
                                .zip(flags[from..to].iter().copied()),
                        );
                    }
                    let used = self.stream.len() - start;
                    self.stream
                        .extend(std::iter::repeat_n((PAD_ID, false), block - used));
                }
            }
        }
        self.stream_epoch = Some(epoch);
        self.stream_builds += 1;
    }

    /// The next `rows` blocks, advancing the cursor (and the epoch when the stream runs out).
    pub fn next_batch(&mut self, rows: usize) -> Batch {
        assert!(
            self.blocks_per_epoch() > 0,
            "corpus shorter than one block of {} tokens",
            self.seq_len + 1
        );
        let t = self.seq_len;
        let stride = match self.packing {
            Packing::Stream => t,
            Packing::Whole => t + 1,
        };
        let mut b = Batch {
            rows,
            seq_len: t,
            inputs: vec![],
            targets: vec![],
            weights: vec![],
        };
        for _ in 0..rows {
            self.ensure_stream(self.cursor.epoch);
            if self.cursor.block >= self.blocks_in_stream() {
                self.cursor = Cursor {
                    epoch: self.cursor.epoch + 1,
                    block: 0,
                };
                self.ensure_stream(self.cursor.epoch);
            }
            let start = self.cursor.block * stride;
            let block = &self.stream[start..start + t + 1];
            b.inputs.extend(block[..t].iter().map(|x| x.0 as i32));
            b.targets.extend(block[1..].iter().map(|x| x.0 as i32));
            let off = self.off_weight;
            b.weights.extend(block[1..].iter().map(|x| match x {
                (_, true) => 1.0,
                (PAD_ID, false) => 0.0,
                (_, false) => off,
            }));
            self.cursor.block += 1;
        }
        b
    }
}

/// Best-fit decreasing bin packing of whole documents into blocks of `block` tokens: longest document first,
/// each into the fullest block that still has room (the paper packs first-fit decreasing; both leave ~1 %
/// padding). A document longer than a block is cut into block-sized pieces, each its own block. The result
/// depends only on the documents, so it is the same in every epoch and after a resume.
fn best_fit_decreasing(docs: &[(Vec<u32>, Vec<bool>)], block: usize) -> Vec<Vec<(usize, usize)>> {
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(docs[i].0.len()), i));
    let mut bins: Vec<Vec<(usize, usize)>> = vec![];
    // (room left, bin index) of every block that is not full.
    let mut open = std::collections::BTreeSet::new();
    for i in order {
        let mut len = docs[i].0.len();
        let mut from = 0;
        while len > block {
            bins.push(vec![(i, from)]);
            from += block;
            len -= block;
        }
        match open.range((len, 0)..).next().copied() {
            Some((room, b)) => {
                open.remove(&(room, b));
                bins[b].push((i, from));
                if room > len {
                    open.insert((room - len, b));
                }
            }
            None => {
                bins.push(vec![(i, from)]);
                if block > len {
                    open.insert((block - len, bins.len() - 1));
                }
            }
        }
    }
    bins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solution_flags_cover_solution_and_answer_through_eos() {
        // <question> q </question> <solution> s </solution> <answer> a </answer> [EOS] <question> ...
        let ids = [4, 20, 5, 6, 21, 7, 8, 22, 9, 3, 4, 23];
        let f = loss_flags(&ids, LossOn::Solution);
        assert_eq!(
            f,
            [
                false, false, false, false, true, true, true, true, true, true, false, false
            ]
        );
        assert!(loss_flags(&ids, LossOn::All).iter().all(|&x| x));
    }

    #[test]
    fn each_epoch_builds_its_stream_once() {
        for packing in [Packing::Whole, Packing::Stream] {
            let docs: Vec<Vec<u32>> = (0..12).map(|i| vec![4, 20 + i, 5, 6, 21, 7, 3]).collect();
            let mut d = PackedData::new(docs, LossOn::Solution, packing, 15, 0, true);
            let per_epoch = d.blocks_per_epoch();
            assert!(per_epoch >= 2, "{packing:?}: {per_epoch} blocks");
            let first_epoch: Vec<Batch> = (0..per_epoch).map(|_| d.next_batch(1)).collect();
            for _ in 0..2 * per_epoch {
                d.next_batch(1);
            }
            assert_eq!(d.cursor.epoch, 2, "{packing:?}");
            assert_eq!(d.stream_builds, 3, "{packing:?}: one build per epoch");
            assert_eq!(d.blocks_per_epoch(), per_epoch, "{packing:?}");
            // Reading epoch 0 again rebuilds it identically.
            d.cursor = Cursor { epoch: 0, block: 0 };
            for b in &first_epoch {
                assert_eq!(d.next_batch(1).inputs, b.inputs, "{packing:?}");
            }
        }
    }

    #[test]
    fn off_weight_weighs_the_prompt_and_never_the_padding() {
        // <question> q </question> <solution> s </solution> <answer> a </answer> [EOS], then padding.
        let doc = vec![4, 20, 5, 6, 21, 7, 8, 22, 9, 3];
        let mut d = PackedData::new(vec![doc], LossOn::Solution, Packing::Whole, 13, 0, false)
            .with_off_weight(0.25);
        let b = d.next_batch(1);
        // Targets: q </question> <solution> | s </solution> <answer> a </answer> [EOS] | PAD PAD PAD.
        let want = [
            0.25, 0.25, 0.25, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(b.weights, want);
    }

    #[test]
    fn a_document_starts_after_each_eos_and_at_each_row() {
        let e = EOS_ID as i32;
        // Two rows of 5: [a a EOS b b | b EOS EOS c c].
        let inputs = [10, 11, e, 12, 13, 14, e, e, 15, 16];
        assert_eq!(
            document_starts(&inputs, 5),
            [0, 0, 0, 3, 3, 0, 0, 2, 3, 3],
            "the EOS belongs to the document it ends; a new row starts a new document"
        );
    }

    #[test]
    fn blocks_tile_the_stream_and_a_restored_cursor_reads_the_same_blocks() {
        let docs: Vec<Vec<u32>> = (0..20u32)
            .map(|i| (0..(5 + i % 7)).map(|j| 10 + i * 10 + j).collect())
            .collect();
        let mut a = PackedData::new(docs.clone(), LossOn::All, Packing::Stream, 8, 5, true);
        let first = a.next_batch(3);
        assert_eq!(
            first.inputs[1..8],
            first.targets[..7],
            "targets are inputs shifted by one"
        );
        assert_eq!(
            first.targets[7], first.inputs[8],
            "consecutive blocks overlap by one token"
        );
        for _ in 0..10 {
            a.next_batch(4);
        }
        assert!(a.cursor.epoch >= 1, "wrapped into a new epoch");
        let saved = a.cursor;
        let want = a.next_batch(5);
        let mut b = PackedData::new(docs, LossOn::All, Packing::Stream, 8, 5, true);
        b.cursor = saved;
        let got = b.next_batch(5);
        assert_eq!((want.inputs, want.weights), (got.inputs, got.weights));
    }

    #[test]
    fn whole_packing_never_cuts_a_document_and_pads_with_zero_weight() {
        // Documents of 3..=9 tokens ([EOS] appended) in blocks of 10: ids encode (doc, position).
        let docs: Vec<Vec<u32>> = (0..40u32)
            .map(|i| (0..(2 + i % 7)).map(|j| 100 + i * 10 + j).collect())
            .collect();
        let mut d = PackedData::new(docs.clone(), LossOn::All, Packing::Whole, 9, 3, true);
        let blocks = d.blocks_per_epoch();
        let b = d.next_batch(blocks);
        let mut seen = std::collections::BTreeSet::new();
        for r in 0..blocks {
            // The whole block: inputs plus the last target.
            let mut row: Vec<u32> = b.inputs[r * 9..(r + 1) * 9]
                .iter()
                .map(|&x| x as u32)
                .collect();
            row.push(b.targets[(r + 1) * 9 - 1] as u32);
            let w = &b.weights[r * 9..(r + 1) * 9];
            let mut k = 0;
            while k < row.len() && row[k] != PAD_ID {
                let doc = (row[k] - 100) / 10;
                let want = &docs[doc as usize];
                assert_eq!(row[k..k + want.len()], want[..], "block {r}");
                assert_eq!(row[k + want.len()], EOS_ID, "[EOS] closes each document");
                assert!(seen.insert(doc), "doc {doc} twice in one epoch");
                k += want.len() + 1;
            }
            assert!(
                row[k..].iter().all(|&t| t == PAD_ID),
                "padding only at the end"
            );
            // A target that is padding carries no loss.
            for (i, &t) in b.targets[r * 9..(r + 1) * 9].iter().enumerate() {
                assert_eq!(w[i] == 0.0, t as u32 == PAD_ID, "block {r} position {i}");
            }
        }
        assert_eq!(seen.len(), docs.len(), "every document once per epoch");
        // Bin packing wastes little: within one block of the lower bound.
        let tokens: usize = docs.iter().map(|d| d.len() + 1).sum();
        assert!(
            blocks <= tokens.div_ceil(10) + 1,
            "{blocks} blocks for {tokens} tokens"
        );
        // The next read starts the second epoch from its first block.
        d.next_batch(1);
        assert_eq!(d.cursor, Cursor { epoch: 1, block: 1 });
    }
}
