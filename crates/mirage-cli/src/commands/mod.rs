//! One module per command group, each with its flags (clap derive) beside the glue that
//! calls the library: `codec` (encode, decode, info, roundtrip), `train <model>`,
//! `export <model>`, `bench <what>`, `eval`, `study ...` and `realism ...`.
//! `main.rs` dispatches to them.

pub(crate) mod bench;
pub(crate) mod codec;
pub(crate) mod eval;
pub(crate) mod export;
pub(crate) mod realism;
pub(crate) mod study;
pub(crate) mod train;
