#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| signaling_fuzz::targets::config_toml(data));
