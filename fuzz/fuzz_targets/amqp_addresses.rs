#![no_main]
//! See `iothub_emulator::fuzzing::amqp_addresses`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| iothub_emulator::fuzzing::amqp_addresses(data));
