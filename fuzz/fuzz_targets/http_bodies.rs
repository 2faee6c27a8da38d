#![no_main]
//! See `iothub_emulator::fuzzing::http_bodies`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| iothub_emulator::fuzzing::http_bodies(data));
