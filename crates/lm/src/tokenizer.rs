//! The task tokenizer, stored as a Hugging Face `tokenizer.json` (the `tokenizers` crate).
//!
//! Both kinds share GPT-2 byte-level pre-tokenisation (a space is carried by the token that follows it, every
//! number is one pre-token, punctuation is split from words), so decoding is exact for any text:
//! * [`TokenizerKind::Word`]: one token per distinct pre-token of the corpus (`learnability.md`'s finding:
//!   whole-number, word-level tokens train well at small scale; unseen words fall back to `[UNK]`);
//! * [`TokenizerKind::Bpe`]: byte-level BPE of a target size (the paper's choice, ~2.2k), never `[UNK]`;
//! * [`TokenizerKind::WordNames`] (`word+names`): `word`, plus every multi-word name of the task's three
//!   contexts ("Cedar Valley", "adult blue jay", "total number of adult animals") as one token. A normalizer
//!   joins each name's words with `ǂ` (a letter to the pre-tokenizer, so the name stays one pre-token) and the
//!   decoder turns `ǂ` back into spaces: exact for any text without a literal `ǂ`. A tiny model then binds an
//!   item to its place across three tokens (`adultǂowl in CedarǂValley`) instead of five to seven, which is
//!   what made op 2-4 learnable on a CPU (crates/lm/README.md).
//!
//! Special tokens have fixed ids 0–9 (spec §4.2) and are matched in text before pre-tokenisation.

use anyhow::{Context, Result, anyhow, ensure};
use std::path::Path;
use tokenizers::AddedToken;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::{NormalizerWrapper, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

pub const SPECIAL_TOKENS: [&str; 10] = [
    "[UNK]",
    "[PAD]",
    "[BOS]",
    "[EOS]",
    "<question>",
    "</question>",
    "<solution>",
    "</solution>",
    "<answer>",
    "</answer>",
];
pub const UNK_ID: u32 = 0;
pub const PAD_ID: u32 = 1;
pub const BOS_ID: u32 = 2;
pub const EOS_ID: u32 = 3;
pub const QUESTION_ID: u32 = 4;
pub const QUESTION_END_ID: u32 = 5;
pub const SOLUTION_ID: u32 = 6;
pub const SOLUTION_END_ID: u32 = 7;
pub const ANSWER_ID: u32 = 8;
pub const ANSWER_END_ID: u32 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    Word,
    WordNames,
    Bpe { vocab_size: usize },
}

/// Joins the words of a task name into one pre-token (see the module docs).
const NAME_JOINER: char = 'ǂ';

impl std::str::FromStr for TokenizerKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "word" => Ok(TokenizerKind::Word),
            "word+names" => Ok(TokenizerKind::WordNames),
            _ => match s.strip_prefix("bpe:").map(str::parse::<usize>) {
                Some(Ok(n)) if n > 266 => Ok(TokenizerKind::Bpe { vocab_size: n }),
                _ => Err(anyhow!(
                    "unknown tokenizer `{s}`; expected `word`, `word+names` or `bpe:N` with N > 266 (e.g. `bpe:2200`)"
                )),
            },
        }
    }
}

/// The pieces of `text` between special tokens (non-empty ones only).
fn split_specials(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = text;
    while !rest.is_empty() {
        let next = SPECIAL_TOKENS
            .iter()
            .filter_map(|s| rest.find(s).map(|i| (i, s.len())))
            .min();
        let (head, tail) = match next {
            Some((i, n)) => (&rest[..i], &rest[i + n..]),
            None => (rest, ""),
        };
        if !head.is_empty() {
            out.push(head.to_string());
        }
        rest = tail;
    }
    out
}

/// The multi-word names of the task's contexts, longest first (so that no name is joined inside a longer
/// one), then alphabetical: a fixed order, so the same corpus gives the same `tokenizer.json`.
fn task_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = task::Context::ALL
        .iter()
        .flat_map(|c| c.phrases())
        .collect();
    names.sort_by_key(|p| (std::cmp::Reverse(p.len()), *p));
    names.dedup();
    names
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

fn specials() -> Vec<AddedToken> {
    SPECIAL_TOKENS
        .iter()
        .map(|s| AddedToken::from(s.to_string(), true))
        .collect()
}

impl Tokenizer {
    /// Trains on `texts` (deterministic: the same texts give the same `tokenizer.json`).
    pub fn train<S: AsRef<str> + Send>(
        kind: TokenizerKind,
        texts: impl Iterator<Item = S> + Send,
    ) -> Result<Self> {
        let byte_level = ByteLevel::new(false, true, true);
        let (model, mut trainer): (tokenizers::models::ModelWrapper, TrainerWrapper) = match kind {
            TokenizerKind::Word | TokenizerKind::WordNames => (
                WordLevel::builder()
                    .unk_token(SPECIAL_TOKENS[0].to_string())
                    .build()
                    .map_err(|e| anyhow!("{e}"))?
                    .into(),
                TrainerWrapper::WordLevelTrainer(
                    WordLevelTrainer::builder()
                        .show_progress(false)
                        .vocab_size(usize::MAX)
                        .special_tokens(specials())
                        .build()
                        .map_err(|e| anyhow!("{e}"))?,
                ),
            ),
            TokenizerKind::Bpe { vocab_size } => (
                BPE::default().into(),
                TrainerWrapper::BpeTrainer(
                    BpeTrainerBuilder::new()
                        .show_progress(false)
                        .vocab_size(vocab_size)
                        .special_tokens(specials())
                        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                        .build(),
                ),
            ),
        };
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(byte_level));
        if kind == TokenizerKind::WordNames {
            let join = |p: &str| p.replace(' ', &NAME_JOINER.to_string());
            let replaces = task_names()
                .into_iter()
                .map(|p| Ok(Replace::new(p, join(p))?.into()))
                .collect::<tokenizers::Result<Vec<NormalizerWrapper>>>()
                .map_err(|e| anyhow!("{e}"))?;
            inner.with_normalizer(Some(NormalizerSequence::new(replaces)));
            let unjoin = Replace::new(NAME_JOINER.to_string(), " ").map_err(|e| anyhow!("{e}"))?;
            inner.with_decoder(Some(DecoderSequence::new(vec![
                byte_level.into(),
                unjoin.into(),
            ])));
        } else {
            inner.with_decoder(Some(byte_level));
        }
        inner.add_special_tokens(&specials());
        // Train on the text between special tokens, exactly the segments that encoding pre-tokenises (the
        // trainer would otherwise count the special tokens as words and give them a second id).
        let segments = texts.flat_map(|t| split_specials(t.as_ref()).into_iter());
        inner
            .train(&mut trainer, segments)
            .map_err(|e| anyhow!("training the tokenizer: {e}"))?;
        let tok = Tokenizer { inner };
        tok.check_specials().context("after training")?;
        Ok(tok)
    }

    fn check_specials(&self) -> Result<()> {
        for (id, s) in SPECIAL_TOKENS.iter().enumerate() {
            let got = self.inner.token_to_id(s);
            ensure!(
                got == Some(id as u32),
                "special token `{s}` must have id {id}, has {got:?}"
            );
        }
        Ok(())
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("reading tokenizer {}: {e}", path.display()))?;
        let tok = Tokenizer { inner };
        tok.check_specials()
            .with_context(|| format!("{}", path.display()))?;
        Ok(tok)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, true)
            .map_err(|e| anyhow!("writing tokenizer {}: {e}", path.display()))
    }

    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(true)
            .map_err(|e| anyhow!("serialising tokenizer: {e}"))
    }

    /// Vocabulary size including special tokens (the model's `vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`; no BOS/EOS is added (spec §4.2: pre-training text only gets an EOS appended).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("encoding: {e}"))?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| anyhow!("decoding: {e}"))
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORPUS: &[&str] = &[
        "<question> The number of adult fox in Cedar Valley equals 4. The number of adult wolf in Saint-Rivage equals 2 times the number of adult fox in Cedar Valley. What is the number of adult wolf in Saint-Rivage? </question> <solution> Define adult fox in Cedar Valley as G; so G = 4. Define adult wolf in Saint-Rivage as d; so d = 2 * G = 2 * 4 = 8. </solution> <answer> 8 </answer>[EOS]",
        "<question> The number of sci-fi books in Oakridge equals 13. How many sci-fi books does Oakridge have? </question> <solution> Define sci-fi books in Oakridge as Q; so Q = 13. </solution> <answer> 13 </answer>[EOS]",
    ];

    fn round_trip(kind: TokenizerKind) -> Tokenizer {
        let tok = Tokenizer::train(kind, CORPUS.iter()).unwrap();
        for text in CORPUS {
            let ids = tok.encode(text).unwrap();
            assert_eq!(&tok.decode(&ids).unwrap(), text, "{kind:?}");
            assert_eq!(ids[0], QUESTION_ID);
            assert_eq!(*ids.last().unwrap(), EOS_ID);
            assert!(!ids.contains(&UNK_ID));
        }
        let path =
            std::env::temp_dir().join(format!("lm-tok-{}-{kind:?}.json", std::process::id()));
        tok.save(&path).unwrap();
        let again = Tokenizer::from_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            again.encode(CORPUS[0]).unwrap(),
            tok.encode(CORPUS[0]).unwrap()
        );
        tok
    }

    #[test]
    fn word_level_round_trips_with_whole_numbers_and_unk_for_unseen_words() {
        let tok = round_trip(TokenizerKind::Word);
        let ids = tok.encode(" 13. Saint-Rivage").unwrap();
        let pieces: Vec<String> = ids.iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
        // Byte-level pre-tokens: "Ġ" is the carried space.
        assert_eq!(pieces, ["Ġ13", ".", "ĠSaint", "-", "Rivage"]);
        assert_eq!(
            tok.encode(" zebra").unwrap(),
            [UNK_ID],
            "unseen words map to [UNK]"
        );
    }

    #[test]
    fn word_names_makes_each_task_name_one_token_and_round_trips() {
        let tok = round_trip(TokenizerKind::WordNames);
        let ids = tok.encode(" adult fox in Cedar Valley as G").unwrap();
        let pieces: Vec<String> = ids.iter().map(|&i| tok.id_to_token(i).unwrap()).collect();
        // "ÇĤ" is the byte-level spelling of the joiner `ǂ`.
        assert_eq!(
            pieces,
            ["ĠadultÇĤfox", "Ġin", "ĠCedarÇĤValley", "Ġas", "ĠG"]
        );
        assert_eq!(tok.decode(&ids).unwrap(), " adult fox in Cedar Valley as G");
        // Words of a name standing alone are not joined.
        assert_eq!(tok.encode(" Cedar").unwrap(), [UNK_ID]);
        // Names are joined longest first: the aggregate is one token, not "total number of" + "adult ...".
        let corpus =
            ["<question> What is the total number of adult animals in Pine Ridge? </question>"];
        let t = Tokenizer::train(TokenizerKind::WordNames, corpus.iter()).unwrap();
        let ids = t.encode(corpus[0]).unwrap();
        let pieces: Vec<String> = ids.iter().map(|&i| t.id_to_token(i).unwrap()).collect();
        assert!(
            pieces.contains(&"ĠtotalÇĤnumberÇĤofÇĤadultÇĤanimals".to_string()),
            "{pieces:?}"
        );
        assert_eq!(t.decode(&ids).unwrap(), corpus[0]);
    }

    #[test]
    fn bpe_round_trips_and_never_needs_unk() {
        let tok = round_trip(TokenizerKind::Bpe { vocab_size: 400 });
        let text = "<answer> zebra 12345 </answer>";
        let ids = tok.encode(text).unwrap();
        assert!(!ids.contains(&UNK_ID));
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }

    #[test]
    fn same_corpus_gives_identical_tokenizer_json() {
        let a = Tokenizer::train(TokenizerKind::Bpe { vocab_size: 400 }, CORPUS.iter()).unwrap();
        let b = Tokenizer::train(TokenizerKind::Bpe { vocab_size: 400 }, CORPUS.iter()).unwrap();
        assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
    }
}
