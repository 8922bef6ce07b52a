//! The parts of xtask that tests use too: the plugin scaffold.

pub mod scaffold;
