//! One module per command group; `main.rs` dispatches to them.

pub(crate) mod bench;
pub(crate) mod codec;
pub(crate) mod eval;
pub(crate) mod export;
pub(crate) mod realism;
pub(crate) mod study;
pub(crate) mod train;
