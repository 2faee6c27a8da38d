//! The attack issue 12 described, run against the hub: recover the generator's state from one
//! lock token a device saw, then compute other devices' keys. It must work against a seeded
//! source (which proves the attack is real) and fail against the OS source the emulator uses.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use iothub_protocol::registry::Device;
use iothub_protocol::{Message, MessageId};
use time::macros::datetime;

use super::{Entropy, Hub, HubSettings};

const G: u64 = 0x9E37_79B9_7F4A_7C15;
const C1: u64 = 0xBF58_476D_1CE4_E5B9;
const C2: u64 = 0x94D0_49BB_1331_11EB;

fn mix(s: u64) -> u64 {
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(C1);
    z = (z ^ (z >> 27)).wrapping_mul(C2);
    z ^ (z >> 31)
}

fn unxorshift(z: u64, shift: u32) -> u64 {
    let mut x = z;
    for _ in 0..64 / shift + 1 {
        x = z ^ (x >> shift);
    }
    x
}

fn mul_inverse(c: u64) -> u64 {
    let mut inv = c;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(inv)));
    }
    inv
}

fn unmix(o: u64) -> u64 {
    let z = unxorshift(o, 31).wrapping_mul(mul_inverse(C2));
    let z = unxorshift(z, 27).wrapping_mul(mul_inverse(C1));
    unxorshift(z, 30)
}

/// The splitmix state right after the first half of `token` was drawn, if the token came from
/// a splitmix stream.
fn recover_state(token: &str) -> Option<u64> {
    let raw = *uuid::Uuid::parse_str(token).ok()?.as_bytes();
    let second = u64::from_le_bytes(raw[8..16].try_into().ok()?);
    // The uuid's version nibble (byte 6) replaced 4 bits of the first half: try all 16.
    (0u8..16).find_map(|n| {
        let mut first = raw;
        first[6] = (first[6] & 0x0f) | (n << 4);
        let s = unmix(u64::from_le_bytes(first[..8].try_into().ok()?));
        // The variant bits (top 2 of byte 8) were overwritten in the second half.
        let mask = !(0xc0u64);
        (mix(s.wrapping_add(G)) & mask == second & mask).then_some(s)
    })
}

/// Keys the stream would have produced within 200 draws either side of `state`.
fn predicts(state: u64, key: &str) -> bool {
    (-200i64..200).any(|k| {
        let mut raw = Vec::with_capacity(32);
        for i in 0..4 {
            let s = state.wrapping_add(G.wrapping_mul((k + i) as u64));
            raw.extend_from_slice(&mix(s).to_le_bytes());
        }
        STANDARD.encode(raw) == key
    })
}

/// Creates `a`, gives it a C2D message and locks it (the token the attacker sees), then
/// creates `b`; returns the lock token and both devices' primary keys.
fn observe(hub: &mut Hub) -> (String, String, String) {
    let t0 = datetime!(2026-01-01 0:00 UTC);
    let key = |d: Device| d.authentication.symmetric_key.primary_key.unwrap();
    let a = key(hub.create_device(Device::new("a"), t0).unwrap());
    let mut m = Message::new("x");
    m.system.message_id = Some(MessageId::from("m"));
    hub.enqueue_c2d("a", m, t0).unwrap();
    let token = hub.receive_c2d("a", t0).unwrap().unwrap();
    let token = token.system.lock_token.unwrap();
    let b = key(hub.create_device(Device::new("b"), t0).unwrap());
    (token, a, b)
}

#[test]
fn one_lock_token_predicts_keys_of_a_seeded_hub_only() {
    let seed = 1_764_842_400_000_000_000; // a start time in nanoseconds, as the seed once was
    let mut seeded = Hub::new(HubSettings::default(), seed);
    let (token, a, b) = observe(&mut seeded);
    let state = recover_state(&token).expect("a seeded token gives its state away");
    assert!(
        predicts(state, &a) && predicts(state, &b),
        "the attack works"
    );

    let mut os = Hub::new(HubSettings::default(), seed).with_entropy(Entropy::os());
    let (token, a, b) = observe(&mut os);
    if let Some(state) = recover_state(&token) {
        assert!(!predicts(state, &a) && !predicts(state, &b));
    }
}

#[test]
fn hubs_built_at_the_same_instant_generate_different_secrets() {
    let mk = || Hub::new(HubSettings::default(), 42).with_entropy(Entropy::os());
    let (mut h1, mut h2) = (mk(), mk());
    let (t1, a1, b1) = observe(&mut h1);
    let (t2, a2, b2) = observe(&mut h2);
    assert_ne!(t1, t2);
    assert_ne!(a1, a2);
    assert_ne!(b1, b2);
    assert_ne!(a1, b1);
}
