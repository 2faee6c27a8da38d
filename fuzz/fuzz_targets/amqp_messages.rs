#![no_main]
//! See `iothub_emulator::fuzzing::amqp_messages`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| iothub_emulator::fuzzing::amqp_messages(data));
