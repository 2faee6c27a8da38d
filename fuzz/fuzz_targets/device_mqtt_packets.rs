#![no_main]
//! See `iothub_device::fuzzing::mqtt_packets`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| iothub_device::fuzzing::mqtt_packets(data));
