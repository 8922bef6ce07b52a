//! Packed training data: documents (token ids + a per-token loss flag) are concatenated, in an order shuffled
//! afresh each epoch, into one stream that is cut into fixed blocks of `seq_len + 1` tokens (inputs and
//! next-token targets overlap by one). Documents share blocks and attend across boundaries, as the paper's
//! packing does (spec §4.3); every document ends with `[EOS]`.
//!
//! The cursor (epoch, next block) is the whole reading state, so resuming a run reads exactly the same blocks.

use crate::rng::Rng;
use crate::tokenizer::{EOS_ID, SOLUTION_ID};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub block: usize,
}

/// One batch on the host: `inputs`/`targets` `[rows, seq_len]` row-major, `weights` 0/1 for the loss.
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
            n > 0 && self.rows % n == 0,
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
    /// The current epoch's stream (rebuilt when the epoch changes).
    stream: Vec<(u32, bool)>,
    stream_epoch: Option<u64>,
    pub cursor: Cursor,
}

impl PackedData {
    /// `docs` must each end with `[EOS]` (appended here when missing). `shuffle = false` keeps the order
    /// (for held-out data, so evaluation always reads the same blocks).
    pub fn new(
        docs: Vec<Vec<u32>>,
        loss_on: LossOn,
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
            stream: vec![],
            stream_epoch: None,
            cursor: Cursor { epoch: 0, block: 0 },
        }
    }

    pub fn num_tokens(&self) -> usize {
        self.docs.iter().map(|d| d.0.len()).sum()
    }

    /// Full blocks per epoch.
    pub fn blocks_per_epoch(&self) -> usize {
        (self.num_tokens().saturating_sub(1)) / self.seq_len
    }

    fn ensure_stream(&mut self, epoch: u64) {
        if self.stream_epoch == Some(epoch) {
            return;
        }
        let mut order: Vec<usize> = (0..self.docs.len()).collect();
        if self.shuffle {
            Rng::new(self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)).shuffle(&mut order);
        }
        self.stream.clear();
        for i in order {
            let (ids, flags) = &self.docs[i];
            self.stream
                .extend(ids.iter().copied().zip(flags.iter().copied()));
        }
        self.stream_epoch = Some(epoch);
    }

    /// The next `rows` blocks, advancing the cursor (and the epoch when the stream runs out).
    pub fn next_batch(&mut self, rows: usize) -> Batch {
        assert!(
            self.blocks_per_epoch() > 0,
            "corpus shorter than one block of {} tokens",
            self.seq_len + 1
        );
        let t = self.seq_len;
        let mut b = Batch {
            rows,
            seq_len: t,
            inputs: vec![],
            targets: vec![],
            weights: vec![],
        };
        for _ in 0..rows {
            if self.cursor.block >= self.blocks_per_epoch() {
                self.cursor = Cursor {
                    epoch: self.cursor.epoch + 1,
                    block: 0,
                };
            }
            self.ensure_stream(self.cursor.epoch);
            let block = &self.stream[self.cursor.block * t..self.cursor.block * t + t + 1];
            b.inputs.extend(block[..t].iter().map(|x| x.0 as i32));
            b.targets.extend(block[1..].iter().map(|x| x.0 as i32));
            b.weights
                .extend(block[1..].iter().map(|x| if x.1 { 1.0 } else { 0.0 }));
            self.cursor.block += 1;
        }
        b
    }
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
    fn blocks_tile_the_stream_and_a_restored_cursor_reads_the_same_blocks() {
        let docs: Vec<Vec<u32>> = (0..20u32)
            .map(|i| (0..(5 + i % 7)).map(|j| 10 + i * 10 + j).collect())
            .collect();
        let mut a = PackedData::new(docs.clone(), LossOn::All, 8, 5, true);
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
        let mut b = PackedData::new(docs, LossOn::All, 8, 5, true);
        b.cursor = saved;
        let got = b.next_batch(5);
        assert_eq!((want.inputs, want.weights), (got.inputs, got.weights));
    }
}
