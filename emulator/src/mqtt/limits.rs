//! The limits that protect the emulator from one connection: sizes, timeouts, keep-alive and
//! packet rate. Plain values and arithmetic; time is an argument.
//!
//! Reference: iothub-protocol.md 3.2 (keep-alive 1.5x, capped at 1767 s). The D2C size limit
//! is the hub's (`hub/telemetry.rs`); here it only sizes the largest packet read.

use std::time::Duration;

use iothub_protocol::message::MAX_D2C_SIZE;
use tokio::time::Instant;

/// Room for the topic (property bag) on top of the payload; topics are at most 64 KB.
pub const MAX_TOPIC_ROOM: usize = 64 * 1024;
/// The server-side keep-alive cap: the Azure load balancer's idle timeout.
pub const KEEP_ALIVE_CAP: Duration = Duration::from_secs(1767);

/// Per-connection limits. [`Limits::default`] is what the listeners use; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The first packet must be a CONNECT that arrives within this time.
    pub connect_timeout: Duration,
    /// Any single write (or flush) that takes longer closes the connection: a client that
    /// stops reading cannot hold the connection task forever.
    pub write_timeout: Duration,
    /// How long a new connection waits for the connection it takes over to hand the session
    /// back.
    pub takeover_timeout: Duration,
    /// Largest packet, after the fixed header, in either direction: big enough for a full
    /// D2C message, so that the hub, not the codec, refuses one that is too large.
    pub max_packet_size: usize,
    /// Most packets a client may send in one second before the connection is closed.
    pub max_packets_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            takeover_timeout: Duration::from_secs(10),
            // Topic length prefix, packet id, topic and payload.
            max_packet_size: MAX_D2C_SIZE + MAX_TOPIC_ROOM + 4,
            // High enough that one device's telemetry in a load test (thousands to tens of
            // thousands per second) never trips it; at 5,000 the bench's devices were closed.
            // Only a runaway client does.
            max_packets_per_second: 100_000,
        }
    }
}

/// How long the server waits for the next packet: 1.5 times the client's keep-alive, capped
/// at [`KEEP_ALIVE_CAP`]. Keep-alive 0 ("no keep-alive" in MQTT) gets the cap too: a silent
/// connection must not hold its slot forever, and the hub's load balancer drops it as well.
/// Always `Some`; the `Option` leaves room for a configuration without a timeout.
pub fn idle_timeout(keep_alive_secs: u16) -> Option<Duration> {
    if keep_alive_secs == 0 {
        return Some(KEEP_ALIVE_CAP);
    }
    let t = Duration::from_millis(u64::from(keep_alive_secs) * 1500);
    Some(t.min(KEEP_ALIVE_CAP))
}

/// Counts packets per one-second window.
#[derive(Debug, Clone)]
pub struct FloodGuard {
    limit: u32,
    window_start: Instant,
    count: u32,
}

impl FloodGuard {
    /// A guard allowing `limit` packets per second, starting at `now`.
    pub fn new(limit: u32, now: Instant) -> Self {
        FloodGuard {
            limit,
            window_start: now,
            count: 0,
        }
    }

    /// Counts a packet received at `now`; false when the client went over the limit.
    pub fn allow(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_is_one_and_a_half_times_capped() {
        assert_eq!(idle_timeout(0), Some(KEEP_ALIVE_CAP));
        assert_eq!(idle_timeout(1), Some(Duration::from_millis(1500)));
        assert_eq!(idle_timeout(60), Some(Duration::from_secs(90)));
        assert_eq!(idle_timeout(1177), Some(Duration::from_millis(1_765_500)));
        assert_eq!(idle_timeout(1178), Some(KEEP_ALIVE_CAP));
        assert_eq!(idle_timeout(u16::MAX), Some(KEEP_ALIVE_CAP));
    }

    #[test]
    fn flood_guard_resets_each_second() {
        let t0 = Instant::now();
        let mut g = FloodGuard::new(3, t0);
        assert!(g.allow(t0));
        assert!(g.allow(t0));
        assert!(g.allow(t0 + Duration::from_millis(500)));
        assert!(!g.allow(t0 + Duration::from_millis(900)));
        assert!(g.allow(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn packet_size_fits_a_full_d2c_message() {
        let l = Limits::default();
        assert!(l.max_packet_size >= MAX_D2C_SIZE + MAX_TOPIC_ROOM);
    }
}
