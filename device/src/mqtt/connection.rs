//! One open MQTT connection: CONNECT, the packets both ways, and the bookkeeping that must not
//! outlive it (packet ids, the telemetry in flight, PUBACK order, keep-alive, the token
//! deadline).
//!
//! The driver task does the connection's I/O itself, with no task or channel in between:
//! packets it sends are encoded into one write buffer, and [`Connection::io`] writes what is
//! buffered and reads what arrived. Everything queued while the driver handles a burst of
//! commands or of incoming packets therefore leaves in one write (one TLS record, one system
//! call), which is most of what a device pays per message.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Login, Packet, Publish};
use rumqttc::mqttbytes::{self, QoS};
use tokio::io::AsyncWrite;
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;

use super::acks::AckQueue;
use super::errors::{connect_failed, refused};
use super::params::{MAX_PACKET, Params};
use super::socket::{Stream, dial};
use crate::error::Error;
use crate::runtime::Runtime;
use crate::token::Token;

/// Telemetry PUBLISHes awaiting their PUBACK on one connection; later sends wait their turn.
/// The hub keeps no window of its own for device PUBLISHes; this bounds what a lost connection
/// leaves to send again.
pub(super) const MAX_INFLIGHT: usize = 100;

/// What one read asks for: a full TLS record.
const READ_CHUNK: usize = 16 * 1024;

/// The driver takes no new commands while this much waits to be written: a hub that reads
/// slowly slows the application down instead of growing the buffer.
const WRITE_HIGH_WATER: usize = 1024 * 1024;

/// What happens to the token next.
#[derive(Debug, Clone, Copy)]
pub(super) enum Deadline {
    /// Reconnect with a new token at this time.
    Renew(Instant),
    /// The ready-made token expires then; the client stops.
    Expire(Instant, u64),
}

impl Deadline {
    pub fn at(self) -> Instant {
        match self {
            Deadline::Renew(t) | Deadline::Expire(t, _) => t,
        }
    }
}

/// Why a connection is no longer usable.
#[derive(Debug, thiserror::Error)]
pub(super) enum Lost {
    #[error("the hub closed the connection")]
    Closed,
    #[error("the connection failed")]
    Io(#[from] io::Error),
    #[error("the hub sent a malformed MQTT packet: {0:?}")]
    Malformed(mqttbytes::Error),
    #[error("no PINGRESP within the keep-alive interval ({0:?})")]
    KeepAlive(Duration),
}

/// One open connection.
pub(super) struct Connection {
    stream: Box<dyn Stream>,
    read: BytesMut,
    write: BytesMut,
    /// Bytes were handed to the stream since its last flush (TLS and WebSocket buffer them).
    unflushed: bool,
    last_pkid: u16,
    keep_alive: Duration,
    next_ping: Instant,
    ping_outstanding: bool,
    /// Which connection this is: messages remember it, so they are settled only on it.
    pub generation: u64,
    /// C2D messages received on this connection and not yet acknowledged.
    pub acks: AckQueue,
    /// Packet id → telemetry waiting for its PUBACK.
    pub inflight: HashMap<u16, u64>,
    /// Telemetry waiting for room in the in-flight window, oldest first.
    pub waiting: VecDeque<u64>,
    pub deadline: Deadline,
}

/// Opens a connection with `token`: dial, CONNECT, and wait (at most the connect timeout,
/// all of it together) for the CONNACK. Returns the connection and the CONNACK.
pub(super) async fn open(
    params: &Params,
    token: &Token,
    runtime: &Runtime,
    generation: u64,
) -> Result<(Connection, ConnAck), Error> {
    let limit = params.connect_timeout;
    let attempt = async {
        let stream = dial(params).await?;
        let now = Instant::now();
        let deadline = match token.renew_after {
            Some(after) => Deadline::Renew(now + after),
            None => Deadline::Expire(now + token.valid_for, token.expiry),
        };
        let keep_alive = Duration::from_secs(params.keep_alive.as_secs().clamp(1, 65_535));
        let mut conn = Connection::new(stream, keep_alive, generation, deadline);
        let mut connect = Connect::new(params.client_id());
        connect.keep_alive = keep_alive.as_secs() as u16;
        // Clean session 0, as every official SDK: the hub keeps subscriptions and messages.
        connect.clean_session = false;
        connect.login = Some(Login::new(params.username(), token.text.clone()));
        conn.send(&Packet::Connect(connect))
            .map_err(|e| Error::ArgumentInvalid {
                message: format!("the CONNECT packet cannot be encoded: {e:?}"),
            })?;
        let connack = conn.connack(params).await?;
        Ok((conn, connack))
    };
    tokio::select! {
        _ = runtime.shutdown.cancelled() => Err(Error::Closed),
        r = tokio::time::timeout(limit, attempt) => match r {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                operation: "opening the MQTT connection",
                after: limit,
            }),
        },
    }
}

impl Connection {
    /// A connection over `stream`, before CONNECT.
    fn new(
        stream: Box<dyn Stream>,
        keep_alive: Duration,
        generation: u64,
        deadline: Deadline,
    ) -> Self {
        Connection {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: BytesMut::with_capacity(READ_CHUNK),
            unflushed: false,
            last_pkid: 0,
            keep_alive,
            next_ping: Instant::now() + keep_alive,
            ping_outstanding: false,
            generation,
            acks: AckQueue::default(),
            inflight: HashMap::new(),
            waiting: VecDeque::new(),
            deadline,
        }
    }

    /// Waits for the hub's answer to CONNECT.
    async fn connack(&mut self, params: &Params) -> Result<ConnAck, Error> {
        loop {
            match self.next_packet() {
                Ok(Some(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => {
                    return Ok(ack);
                }
                Ok(Some(Packet::ConnAck(ack))) => return Err(refused(ack.code, params)),
                Ok(Some(other)) => {
                    return Err(Error::Protocol {
                        message: format!(
                            "{} answered CONNECT with {other:?} instead of CONNACK",
                            params.endpoint()
                        ),
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(connect_failed(params, e)),
            }
            self.io().await.map_err(|e| connect_failed(params, e))?;
        }
    }

    /// Queues `packet` for the next write. Fails only for a packet over the size limit.
    pub fn send(&mut self, packet: &Packet) -> Result<(), mqttbytes::Error> {
        packet.write(&mut self.write, MAX_PACKET)?;
        Ok(())
    }

    /// Queues a PUBLISH (its packet id already set for QoS 1).
    pub fn publish(&mut self, publish: &Publish) -> Result<(), mqttbytes::Error> {
        if publish.size() > MAX_PACKET {
            return Err(mqttbytes::Error::OutgoingPacketTooLarge {
                pkt_size: publish.size(),
                max: MAX_PACKET,
            });
        }
        publish.write(&mut self.write)?;
        Ok(())
    }

    /// Queues a QoS 0 PUBLISH.
    pub fn publish_qos0(&mut self, topic: String, payload: bytes::Bytes) {
        let publish = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            pkid: 0,
            payload,
        };
        if let Err(e) = self.publish(&publish) {
            tracing::warn!(error = ?e, topic = %publish.topic, "QoS 0 PUBLISH not sent");
        }
    }

    /// A packet id none of `taken` holds (MQTT 3.1.1 2.3.1: non-zero, unique among the
    /// packets in flight).
    pub fn next_pkid(&mut self, taken: impl Fn(u16) -> bool) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            let id = self.last_pkid;
            if !self.inflight.contains_key(&id) && !taken(id) {
                return id;
            }
        }
    }

    /// True while the telemetry window has room.
    pub fn has_room(&self) -> bool {
        self.inflight.len() < MAX_INFLIGHT
    }

    /// True when the driver may take more commands (the write buffer is not backed up).
    pub fn accepts_commands(&self) -> bool {
        self.write.len() < WRITE_HIGH_WATER
    }

    /// The next complete packet already read, if any.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, Lost> {
        match Packet::read(&mut self.read, MAX_PACKET) {
            Ok(p) => Ok(Some(p)),
            Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(Lost::Malformed(e)),
        }
    }

    /// Writes what is queued (without waiting for the stream to take it) and resolves once
    /// something more was read. Cancel-safe: every byte written or read is accounted for
    /// before it returns `Pending`.
    pub fn io(&mut self) -> impl Future<Output = Result<(), Lost>> + '_ {
        poll_fn(move |cx| {
            self.poll_write(cx)?;
            if self.read.capacity() - self.read.len() < READ_CHUNK {
                self.read.reserve(READ_CHUNK);
            }
            match poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read) {
                Poll::Ready(Ok(0)) => Poll::Ready(Err(Lost::Closed)),
                Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                Poll::Pending => Poll::Pending,
            }
        })
    }

    /// Progress on the write buffer, as far as the stream takes it now.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while !self.write.is_empty() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.write) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.write.advance(n);
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(()),
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// Writes and flushes everything queued, then closes the stream (TLS close_notify, or a
    /// WebSocket close), ignoring what arrives meanwhile.
    pub async fn finish(&mut self) -> io::Result<()> {
        poll_fn(|cx| {
            self.poll_write(cx)?;
            if self.write.is_empty() && !self.unflushed {
                Poll::Ready(Ok::<(), io::Error>(()))
            } else {
                Poll::Pending
            }
        })
        .await?;
        poll_fn(|cx| Pin::new(&mut self.stream).poll_shutdown(cx)).await
    }

    /// When the keep-alive needs the driver next.
    pub fn next_ping(&self) -> Instant {
        self.next_ping
    }

    /// The keep-alive interval passed: PINGREQ, unless the last one is still unanswered, which
    /// means the hub or the path to it is gone.
    pub fn ping(&mut self) -> Result<(), Lost> {
        if self.ping_outstanding {
            return Err(Lost::KeepAlive(self.keep_alive));
        }
        self.ping_outstanding = true;
        self.next_ping = Instant::now() + self.keep_alive;
        // A PINGREQ is two bytes; it always encodes.
        let _ = self.send(&Packet::PingReq);
        Ok(())
    }

    /// The hub answered the PINGREQ.
    pub fn pong(&mut self) {
        self.ping_outstanding = false;
    }
}

/// How long a DISCONNECT may take before the connection is just dropped.
pub(super) const DISCONNECT_GRACE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn pair() -> (Connection, DuplexStream) {
        let (ours, hub) = tokio::io::duplex(1 << 20);
        let far = Instant::now() + Duration::from_secs(3600);
        let conn = Connection::new(
            Box::new(ours),
            Duration::from_secs(30),
            1,
            Deadline::Renew(far),
        );
        (conn, hub)
    }

    fn telemetry(pkid: u16) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "devices/d1/messages/events/".into(),
            pkid,
            payload: bytes::Bytes::from_static(b"{}"),
        }
    }

    /// Drives `io` until the write buffer is out (the duplex peer sends nothing back).
    async fn write_out(conn: &mut Connection) {
        let _ = tokio::time::timeout(Duration::from_millis(50), conn.io()).await;
        assert!(conn.write.is_empty() && !conn.unflushed);
    }

    #[tokio::test]
    async fn a_burst_of_packets_leaves_in_one_write() {
        let (mut conn, mut hub) = pair();
        for pkid in 1..=50 {
            conn.publish(&telemetry(pkid)).unwrap();
        }
        write_out(&mut conn).await;
        let mut buf = BytesMut::with_capacity(1 << 16);
        let n = hub.read_buf(&mut buf).await.unwrap();
        assert_eq!(n, 50 * telemetry(1).size(), "one read takes all fifty");
        for pkid in 1..=50 {
            match Packet::read(&mut buf, MAX_PACKET).unwrap() {
                Packet::Publish(p) => assert_eq!(p.pkid, pkid),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn packets_split_across_reads_come_out_whole_and_in_order() {
        let (mut conn, mut hub) = pair();
        let mut bytes = BytesMut::new();
        for pkid in [7u16, 8] {
            Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(pkid))
                .write(&mut bytes, MAX_PACKET)
                .unwrap();
        }
        hub.write_all(&bytes[..6]).await.unwrap();
        conn.io().await.unwrap();
        assert!(matches!(conn.next_packet(), Ok(Some(Packet::PubAck(a))) if a.pkid == 7));
        assert!(
            matches!(conn.next_packet(), Ok(None)),
            "half a packet waits"
        );
        hub.write_all(&bytes[6..]).await.unwrap();
        conn.io().await.unwrap();
        assert!(matches!(conn.next_packet(), Ok(Some(Packet::PubAck(a))) if a.pkid == 8));
    }

    #[tokio::test]
    async fn a_malformed_or_oversized_packet_loses_the_connection() {
        let (mut conn, mut hub) = pair();
        // Packet type 0 is reserved.
        hub.write_all(&[0x00, 0x00]).await.unwrap();
        conn.io().await.unwrap();
        assert!(matches!(conn.next_packet(), Err(Lost::Malformed(_))));

        let (mut conn, mut hub) = pair();
        // A PUBLISH announcing 2 MB: refused from its fixed header, before any of it arrives.
        hub.write_all(&[0x30, 0x80, 0x80, 0x80, 0x01])
            .await
            .unwrap();
        conn.io().await.unwrap();
        assert!(matches!(conn.next_packet(), Err(Lost::Malformed(_))));
    }

    #[tokio::test]
    async fn the_hub_closing_ends_io() {
        let (mut conn, hub) = pair();
        drop(hub);
        assert!(matches!(conn.io().await, Err(Lost::Closed | Lost::Io(_))));
    }

    #[tokio::test]
    async fn an_unanswered_ping_loses_the_connection_at_the_next_one() {
        let (mut conn, _hub) = pair();
        conn.ping().unwrap();
        conn.pong();
        conn.ping().unwrap();
        assert!(matches!(conn.ping(), Err(Lost::KeepAlive(_))));
    }

    /// A packet the hub may send a device: C2D or twin PUBLISHes (QoS 0 or 1), PUBACKs,
    /// SUBACKs, PINGRESPs.
    fn hub_packet() -> impl Strategy<Value = Packet> {
        prop_oneof![
            (
                "[a-z/%$=&.0-9]{1,80}",
                proptest::collection::vec(any::<u8>(), 0..300),
                1u16..,
                any::<bool>()
            )
                .prop_map(|(topic, payload, pkid, qos1)| {
                    let mut p = Publish::new(
                        topic,
                        if qos1 {
                            QoS::AtLeastOnce
                        } else {
                            QoS::AtMostOnce
                        },
                        payload,
                    );
                    p.pkid = if qos1 { pkid } else { 0 };
                    Packet::Publish(p)
                }),
            (1u16..).prop_map(|id| Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(id))),
            (1u16..).prop_map(|id| Packet::SubAck(rumqttc::mqttbytes::v4::SubAck::new(
                id,
                vec![rumqttc::mqttbytes::v4::SubscribeReasonCode::Success(
                    QoS::AtLeastOnce
                )],
            ))),
            Just(Packet::PingResp),
        ]
    }

    proptest! {
        /// However the hub's bytes are cut into reads, every packet comes out once, whole and
        /// in order, and nothing is left over.
        #[test]
        fn packets_survive_any_split_into_reads(
            packets in proptest::collection::vec(hub_packet(), 1..40),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let mut bytes = BytesMut::new();
            for p in &packets {
                p.write(&mut bytes, MAX_PACKET).unwrap();
            }
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            at.push(bytes.len());
            at.sort_unstable();
            let (mut conn, _hub) = pair();
            let mut got = Vec::new();
            let mut from = 0;
            for to in at {
                conn.read.extend_from_slice(&bytes[from..to]);
                from = to;
                while let Some(p) = conn.next_packet().unwrap() {
                    got.push(p);
                }
            }
            prop_assert_eq!(got, packets);
            prop_assert!(conn.read.is_empty());
        }

        /// What the driver queues leaves as exactly those packets, in order.
        #[test]
        fn queued_packets_leave_in_order(packets in proptest::collection::vec(hub_packet(), 1..40)) {
            let (mut conn, _hub) = pair();
            for p in &packets {
                match p {
                    Packet::Publish(publish) => conn.publish(publish).unwrap(),
                    other => conn.send(other).unwrap(),
                }
            }
            let mut out = std::mem::take(&mut conn.write);
            let mut got = Vec::new();
            while !out.is_empty() {
                got.push(Packet::read(&mut out, MAX_PACKET).unwrap());
            }
            prop_assert_eq!(got, packets);
        }
    }

    #[test]
    fn packet_ids_skip_zero_and_those_in_use() {
        let (mut conn, _hub) = pair();
        conn.last_pkid = u16::MAX - 1;
        conn.inflight.insert(u16::MAX, 0);
        assert_eq!(
            conn.next_pkid(|id| id == 1),
            2,
            "wraps past 0, skips taken ids"
        );
        for id in 3..(3 + MAX_INFLIGHT as u16) {
            conn.inflight.insert(id, 0);
        }
        assert!(!conn.has_room());
    }
}
