#![no_main]
//! See `iothub_emulator::fuzzing::queries`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| iothub_emulator::fuzzing::queries(data));
