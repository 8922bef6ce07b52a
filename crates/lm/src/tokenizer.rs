//! The task tokenizer, stored as a Hugging Face `tokenizer.json` (the `tokenizers` crate).
//!
//! Both kinds share GPT-2 byte-level pre-tokenisation (a space is carried by the token that follows it, every
//! number is one pre-token, punctuation is split from words), so decoding is exact for any text:
//! * [`TokenizerKind::Word`]: one token per distinct pre-token of the corpus (`learnability.md`'s finding:
//!   whole-number, word-level tokens train well at small scale; unseen words fall back to `[UNK]`);
//! * [`TokenizerKind::Bpe`]: byte-level BPE of a target size (the paper's choice, ~2.2k), never `[UNK]`;
//! * [`TokenizerKind::WordNames`] (`word+names`): `word`, plus every multi-word name the caller lists (for the
//!   task: the names of its three contexts, "Cedar Valley", "adult blue jay", "total number of adult animals")
//!   as one token ([`Tokenizer::train_with_phrases`]; this crate knows nothing of the task). A normalizer
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

/// The multi-word phrases among `phrases`, longest first (so that no name is joined inside a longer one),
/// then alphabetical: a fixed order, so the same corpus and phrases give the same `tokenizer.json` whatever
/// order the caller lists them in.
fn joined_phrases<'a>(phrases: &[&'a str]) -> Vec<&'a str> {
    let mut names: Vec<&str> = phrases
        .iter()
        .copied()
        .filter(|p| p.trim().contains(' '))
        .collect();
    names.sort_by_key(|p| (std::cmp::Reverse(p.len()), *p));
    names.dedup();
    names
}

pub struct Tokenizer {
    /// What `tokenizer.json` holds, normalizers included, so that other readers of the file (transformers)
    /// get the same ids.
    inner: tokenizers::Tokenizer,
    fast: Option<Fast>,
}

/// The `word+names` normalizers are one `Replace` per name, each a regex pass over the text: ~150 of them
/// made encoding 200,000 problems take a minute. Joining the names with `str::replace` in the normalizers'
/// order, then encoding with a copy of the tokenizer that has no normalizer, gives the same ids (tested)
/// several times faster.
struct Fast {
    /// `inner` without its normalizer.
    plain: tokenizers::Tokenizer,
    /// (name, joined name), in the normalizers' order.
    joins: Vec<(String, String)>,
}

impl Fast {
    /// The fast path of a tokenizer whose normalizer is a sequence of plain-string `Replace`s (what
    /// `word+names` writes); `None` for any other tokenizer.
    fn of(inner: &tokenizers::Tokenizer) -> Option<Fast> {
        let json = serde_json::to_value(inner.get_normalizer()?).ok()?;
        let list = match json["type"].as_str()? {
            "Sequence" => json["normalizers"].as_array()?.clone(),
            _ => vec![json],
        };
        let joins = list
            .iter()
            .map(|n| {
                (n["type"] == "Replace").then_some(())?;
                Some((
                    n["pattern"]["String"].as_str()?.to_string(),
                    n["content"].as_str()?.to_string(),
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        let mut plain = inner.clone();
        plain.with_normalizer(None::<NormalizerWrapper>);
        Some(Fast { plain, joins })
    }
}

/// `text` with each name replaced by its joined form, in order (as the `Replace` normalizers do).
fn join_names<'t>(text: &'t str, joins: &[(String, String)]) -> std::borrow::Cow<'t, str> {
    let mut out = std::borrow::Cow::Borrowed(text);
    for (from, to) in joins {
        if out.contains(from.as_str()) {
            out = std::borrow::Cow::Owned(out.replace(from.as_str(), to));
        }
    }
    out
}

fn specials() -> Vec<AddedToken> {
    SPECIAL_TOKENS
        .iter()
        .map(|s| AddedToken::from(s.to_string(), true))
        .collect()
}

impl Tokenizer {
    /// Trains on `texts` (deterministic: the same texts give the same `tokenizer.json`). `word+names` needs
    /// its phrases: see [`Self::train_with_phrases`].
    pub fn train<S: AsRef<str> + Send>(
        kind: TokenizerKind,
        texts: impl Iterator<Item = S> + Send,
    ) -> Result<Self> {
        Self::train_with_phrases(kind, texts, &[])
    }

    /// Trains on `texts`; with [`TokenizerKind::WordNames`], each multi-word phrase of `phrases` becomes one
    /// token (other kinds ignore them).
    pub fn train_with_phrases<S: AsRef<str> + Send>(
        kind: TokenizerKind,
        texts: impl Iterator<Item = S> + Send,
        phrases: &[&str],
    ) -> Result<Self> {
        let phrases = joined_phrases(phrases);
        ensure!(
            kind != TokenizerKind::WordNames || !phrases.is_empty(),
            "tokenizer `word+names` needs the multi-word names to join (none were given)"
        );
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
        let joins: Vec<(String, String)> = match kind {
            TokenizerKind::WordNames => phrases
                .iter()
                .map(|p| (p.to_string(), p.replace(' ', &NAME_JOINER.to_string())))
                .collect(),
            _ => vec![],
        };
        if kind == TokenizerKind::WordNames {
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
        // trainer would otherwise count the special tokens as words and give them a second id). Names are
        // joined here rather than by the normalizers, which would do the same ~10x slower (see `Fast`).
        let segments = texts.flat_map(|t| split_specials(&join_names(t.as_ref(), &joins)));
        inner
            .train(&mut trainer, segments)
            .map_err(|e| anyhow!("training the tokenizer: {e}"))?;
        if !joins.is_empty() {
            let replaces = joins
                .iter()
                .map(|(from, to)| Ok(Replace::new(from.as_str(), to.as_str())?.into()))
                .collect::<tokenizers::Result<Vec<NormalizerWrapper>>>()
                .map_err(|e| anyhow!("{e}"))?;
            inner.with_normalizer(Some(NormalizerSequence::new(replaces)));
        }
        let tok = Tokenizer::with_fast_path(inner);
        tok.check_specials().context("after training")?;
        Ok(tok)
    }

    /// `inner`, and for `word+names` the fast path that joins names itself.
    fn with_fast_path(inner: tokenizers::Tokenizer) -> Tokenizer {
        let fast = Fast::of(&inner);
        Tokenizer { inner, fast }
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
        let tok = Tokenizer::with_fast_path(inner);
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
        let encoding = match &self.fast {
            Some(f) => f.plain.encode(join_names(text, &f.joins).as_ref(), false),
            None => self.inner.encode(text, false),
        };
        Ok(encoding
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

    /// The task's names that the tests' texts use (the `task` crate lists them all; this crate does not
    /// depend on it).
    const NAMES: &[&str] = &[
        "adult fox",
        "adult wolf",
        "Cedar Valley",
        "sci-fi books",
        "Pine Ridge",
        "adult animals",
        "total number of adult animals",
        "Saint-Rivage",
    ];

    fn round_trip(kind: TokenizerKind) -> Tokenizer {
        let tok = Tokenizer::train_with_phrases(kind, CORPUS.iter(), NAMES).unwrap();
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
        let t =
            Tokenizer::train_with_phrases(TokenizerKind::WordNames, corpus.iter(), NAMES).unwrap();
        let ids = t.encode(corpus[0]).unwrap();
        let pieces: Vec<String> = ids.iter().map(|&i| t.id_to_token(i).unwrap()).collect();
        assert!(
            pieces.contains(&"ĠtotalÇĤnumberÇĤofÇĤadultÇĤanimals".to_string()),
            "{pieces:?}"
        );
        assert_eq!(t.decode(&ids).unwrap(), corpus[0]);
    }

    #[test]
    fn word_names_fast_path_gives_the_normalizers_ids() {
        let mut texts: Vec<String> = CORPUS.iter().map(|s| s.to_string()).collect();
        // Names next to punctuation, inside longer names, at the ends, repeated, and near-misses.
        texts.push(
            " adult fox adult foxes Cedar Valley, Cedar  Valley.the total number of adult animals"
                .into(),
        );
        texts.push("adult wolf in Pine Ridge equals adult fox in Pine Ridge".into());
        let tok =
            Tokenizer::train_with_phrases(TokenizerKind::WordNames, texts.iter(), NAMES).unwrap();
        assert!(tok.fast.is_some());
        for t in &texts {
            let slow = tok
                .inner
                .encode(t.as_str(), false)
                .unwrap()
                .get_ids()
                .to_vec();
            assert_eq!(tok.encode(t).unwrap(), slow, "{t}");
        }
        // The same after a round trip through tokenizer.json.
        let path = std::env::temp_dir().join(format!("lm-tok-fast-{}.json", std::process::id()));
        tok.save(&path).unwrap();
        let again = Tokenizer::from_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(again.fast.is_some());
        assert_eq!(
            again.encode(&texts[2]).unwrap(),
            tok.encode(&texts[2]).unwrap()
        );
        assert!(
            Tokenizer::train(TokenizerKind::Word, texts.iter())
                .unwrap()
                .fast
                .is_none()
        );
    }

    #[test]
    fn word_names_needs_phrases_and_ignores_their_order() {
        let err = Tokenizer::train(TokenizerKind::WordNames, CORPUS.iter())
            .err()
            .expect("no phrases");
        assert!(err.to_string().contains("word+names"), "{err}");
        let reversed: Vec<&str> = NAMES.iter().rev().copied().collect();
        let a = Tokenizer::train_with_phrases(TokenizerKind::WordNames, CORPUS.iter(), NAMES);
        let b = Tokenizer::train_with_phrases(TokenizerKind::WordNames, CORPUS.iter(), &reversed);
        assert_eq!(a.unwrap().to_json().unwrap(), b.unwrap().to_json().unwrap());
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
