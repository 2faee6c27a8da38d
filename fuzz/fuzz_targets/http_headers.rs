#![no_main]
//! See `iothub_emulator::fuzzing::http_headers`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| iothub_emulator::fuzzing::http_headers(data));
