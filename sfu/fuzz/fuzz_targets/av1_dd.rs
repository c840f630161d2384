#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sfu_fuzz::targets::av1_dd(data));
