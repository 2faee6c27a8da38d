#![no_main]
//! See `iothub_emulator::fuzzing::mqtt_topic`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| iothub_emulator::fuzzing::mqtt_topic(data));
