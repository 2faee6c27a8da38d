//! Deterministic generation of the hub's ids.
//!
//! Message ids, generation ids and etags come from a seeded generator, so a test (or a proptest
//! case) replays exactly. The process seeds it from the clock at start, which makes it
//! predictable: nothing that authorizes anyone (keys, lock tokens) may come from here; those
//! come from [`super::Entropy`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// A splitmix64 generator plus a counter for etags. Serializable so a durable hub continues
/// its etags after a restart instead of repeating them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdGen {
    state: u64,
    etags: u64,
}

impl IdGen {
    /// A generator that yields the same sequence for the same seed.
    pub fn seeded(seed: u64) -> Self {
        IdGen {
            state: seed,
            etags: 0,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        // splitmix64: tiny, fast, and good enough for unique ids.
        super::entropy::splitmix64(&mut self.state)
    }

    /// 16 random bytes.
    pub fn bytes16(&mut self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        out[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        out
    }

    /// A GUID (lower-case, hyphenated, version 4 bits set) for ids that authorize nothing,
    /// such as a generated message id.
    pub fn guid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.bytes16())
            .into_uuid()
            .hyphenated()
            .to_string()
    }

    /// An 18-digit numeric generation id, like the hub's.
    pub fn generation_id(&mut self) -> String {
        format!("63{:016}", self.next_u64() % 10_000_000_000_000_000)
    }

    /// A fresh etag: base64 of a counter, the shape the hub's etags have.
    pub fn etag(&mut self) -> String {
        self.etags += 1;
        STANDARD.encode(self.etags.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_ids_and_ids_are_unique() {
        let mut a = IdGen::seeded(7);
        let mut b = IdGen::seeded(7);
        assert_eq!(a.guid(), b.guid());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(a.guid()));
        }
        let t = a.guid();
        assert_eq!(t.len(), 36);
        assert!(uuid::Uuid::parse_str(&t).is_ok());
        assert_eq!(a.generation_id().len(), 18);
        assert_ne!(a.etag(), a.etag());
    }
}
