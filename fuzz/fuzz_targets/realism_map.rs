#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mirage_fuzz::realism_map(data));
