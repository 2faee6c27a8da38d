//! Where the hub's secrets come from.
//!
//! Anything a peer could use to act as someone else (generated device keys, C2D and feedback
//! lock tokens) is drawn from an [`Entropy`] source, never from the seeded [`super::IdGen`]:
//! an id generator seeded from the start time can be run forward by anyone who sees one of its
//! outputs. The emulator injects [`Entropy::os`] (the operating system's CSPRNG, through
//! ring, fetched 4 KiB at a time); unit and property tests inject [`Entropy::seeded`] so a case replays exactly.
//!
//! What stays with the seeded `IdGen`, and why it may: generated message ids, generation ids
//! and etags identify things but authorize nothing (an etag only guards against lost updates
//! by a caller that already holds RegistryWrite), and they appear in responses anyway.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use iothub_protocol::HubError;
use ring::rand::{SecureRandom, SystemRandom};

/// A source of random bytes for secrets.
#[derive(Debug)]
pub enum Entropy {
    /// The operating system's CSPRNG: what a running emulator uses.
    Os(OsBytes),
    /// A splitmix64 stream: deterministic, for tests only. Predictable by design.
    Seeded(u64),
}

/// Bytes from the operating system's CSPRNG, fetched a block at a time: a lock token per C2D
/// delivery was a `getrandom` system call each (2.5% of the emulator's CPU at 35,000 messages
/// per second). Every byte is handed out once and wiped from the block as it is.
pub struct OsBytes {
    rng: SystemRandom,
    block: Box<[u8; OS_BLOCK]>,
    /// Bytes of `block` already handed out (and wiped); `OS_BLOCK` when it needs a refill.
    used: usize,
}

const OS_BLOCK: usize = 4096;

impl std::fmt::Debug for OsBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the bytes themselves.
        f.debug_struct("OsBytes")
            .field("left", &(OS_BLOCK - self.used))
            .finish()
    }
}

impl OsBytes {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), ring::error::Unspecified> {
        let mut at = 0;
        while at < out.len() {
            if self.used == OS_BLOCK {
                self.rng.fill(&mut self.block[..])?;
                self.used = 0;
            }
            let n = (out.len() - at).min(OS_BLOCK - self.used);
            let taken = &mut self.block[self.used..self.used + n];
            out[at..at + n].copy_from_slice(taken);
            taken.fill(0);
            self.used += n;
            at += n;
        }
        Ok(())
    }
}

impl Entropy {
    /// The operating system's CSPRNG.
    pub fn os() -> Self {
        Entropy::Os(OsBytes {
            rng: SystemRandom::new(),
            block: Box::new([0; OS_BLOCK]),
            used: OS_BLOCK,
        })
    }

    /// A deterministic stream for tests: the same seed gives the same secrets.
    pub fn seeded(seed: u64) -> Self {
        // Kept apart from the id generator's stream, so ids and secrets never coincide.
        Entropy::Seeded(seed ^ 0x5EC2_E75E_C2E7_5EC2)
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) -> Result<(), HubError> {
        match self {
            Entropy::Os(bytes) => bytes.fill(out).map_err(|_| HubError::ServerError {
                detail: "the operating system's random number generator failed".to_owned(),
            }),
            Entropy::Seeded(state) => {
                for chunk in out.chunks_mut(8) {
                    let bytes = splitmix64(state).to_le_bytes();
                    chunk.copy_from_slice(&bytes[..chunk.len()]);
                }
                Ok(())
            }
        }
    }

    /// A 32-byte symmetric key, base64, as the hub generates for a device created without keys.
    pub fn key(&mut self) -> Result<String, HubError> {
        let mut raw = [0u8; 32];
        self.fill(&mut raw)?;
        Ok(STANDARD.encode(raw))
    }

    /// A GUID-shaped lock token (lower-case, hyphenated, version-4 bits set), as the hub uses:
    /// 122 random bits, so holding one lock token tells nothing about another.
    pub fn lock_token(&mut self) -> Result<String, HubError> {
        let mut raw = [0u8; 16];
        self.fill(&mut raw)?;
        Ok(uuid::Builder::from_random_bytes(raw)
            .into_uuid()
            .hyphenated()
            .to_string())
    }
}

/// One splitmix64 step (the same function the id generator uses).
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn seeded_entropy_replays_and_os_entropy_does_not() {
        let (mut a, mut b) = (Entropy::seeded(7), Entropy::seeded(7));
        assert_eq!(a.key().unwrap(), b.key().unwrap());
        assert_eq!(a.lock_token().unwrap(), b.lock_token().unwrap());
        let (mut a, mut b) = (Entropy::os(), Entropy::os());
        assert_ne!(a.key().unwrap(), b.key().unwrap());
        assert_ne!(a.lock_token().unwrap(), b.lock_token().unwrap());
    }

    /// Requests that straddle blocks get fresh bytes on both sides, never a repeat.
    #[test]
    fn os_bytes_across_block_boundaries_never_repeat() {
        let mut e = Entropy::os();
        let mut seen = HashSet::new();
        // 3,000 tokens of 16 bytes: more than eleven blocks, with odd-sized keys between.
        for i in 0..3000 {
            assert!(seen.insert(e.lock_token().unwrap()), "token {i} repeats");
            if i % 7 == 0 {
                let mut odd = [0u8; 13];
                e.fill(&mut odd).unwrap();
                assert_ne!(odd, [0u8; 13], "wiped bytes handed out");
            }
        }
        if let Entropy::Os(b) = &e {
            assert!(
                b.block[..b.used].iter().all(|&x| x == 0),
                "handed-out bytes wiped"
            );
        }
    }

    #[test]
    fn a_thousand_os_keys_share_no_structure() {
        let mut e = Entropy::os();
        let keys: Vec<Vec<u8>> = (0..1000)
            .map(|_| STANDARD.decode(e.key().unwrap()).unwrap())
            .collect();
        assert!(keys.iter().all(|k| k.len() == 32));
        assert_eq!(
            keys.iter().collect::<HashSet<_>>().len(),
            1000,
            "duplicates"
        );
        // Two of 1,000 random keys share a 4-byte prefix with probability about 1e-4.
        let prefixes: HashSet<&[u8]> = keys.iter().map(|k| &k[..4]).collect();
        assert_eq!(prefixes.len(), 1000, "shared 4-byte prefixes");
        // Same for any aligned 4-byte window: a counter or a shared stream would repeat one.
        for w in 0..8 {
            let windows: HashSet<&[u8]> = keys.iter().map(|k| &k[w * 4..w * 4 + 4]).collect();
            assert_eq!(windows.len(), 1000, "window {w} repeats");
        }
        // Bit balance: 256,000 bits, standard deviation 253; 6 sigma is a broken source.
        let ones: u32 = keys.iter().flatten().map(|b| b.count_ones()).sum();
        assert!((126_482..=129_518).contains(&ones), "{ones} one bits");
        // Each bit position is set in about half the keys (sd 15.8; 7 sigma).
        for bit in 0..256 {
            let set = keys
                .iter()
                .filter(|k| k[bit / 8] & (1 << (bit % 8)) != 0)
                .count();
            assert!((390..=610).contains(&set), "bit {bit} set in {set} keys");
        }
    }
}
