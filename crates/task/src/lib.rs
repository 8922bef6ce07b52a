//! The reasoning task (see issue 3).
