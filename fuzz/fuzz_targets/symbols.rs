#![no_main]
use mirage_fuzz::{fuzz_model, symbols};
use std::sync::OnceLock;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Built once: the model is part of the decoder, not of the input.
    static MODELS: OnceLock<[mirage_fuzz::Model; 2]> = OnceLock::new();
    let models = MODELS.get_or_init(|| [fuzz_model(false), fuzz_model(true)]);
    symbols(data, models);
});
