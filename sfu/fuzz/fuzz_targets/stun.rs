#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sfu_fuzz::net_targets::stun(data));
