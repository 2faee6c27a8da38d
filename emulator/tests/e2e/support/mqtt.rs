//! The MQTT side of the end-to-end tests: rumqttc (manual acks) over real TLS trusting the
//! emulator's CA, and raw TLS streams for hand-made packets.

use std::collections::VecDeque;
use std::time::Duration;

use iothub_emulator::RunningEmulator;
use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Publish,
    TlsConfiguration, Transport,
};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{client_tls, device_token, tls_to, within};

/// The SDKs' user name for a device.
pub fn username(id: &str) -> String {
    format!("localhost/{id}/?api-version=2021-04-12&DeviceClientType=rust-test%2F1.0")
}

/// rumqttc options for `client_id` over TLS, manual acks, keep-alive 30 s.
pub fn options(
    emu: &RunningEmulator,
    client_id: &str,
    username: &str,
    password: &str,
    clean_session: bool,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, "localhost", emu.endpoints().mqtt);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        client_tls(emu),
    )));
    o.set_credentials(username, password);
    o.set_clean_session(clean_session);
    o.set_manual_acks(true);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(512 * 1024, 512 * 1024);
    o
}

/// Options for a registered device with a valid token.
pub fn device_options(
    emu: &RunningEmulator,
    id: &str,
    key: &str,
    clean_session: bool,
) -> MqttOptions {
    options(
        emu,
        id,
        &username(id),
        &device_token(emu, id, key),
        clean_session,
    )
}

/// A connected device.
pub struct Mqtt {
    pub client: AsyncClient,
    pub events: EventLoop,
    pub connack: ConnAck,
    /// C2D PUBLISHes received while waiting for something else.
    pub received: VecDeque<Publish>,
}

/// The result of the first poll: the CONNACK or the error.
pub async fn try_connect(opts: MqttOptions) -> Result<Mqtt, ConnectionError> {
    let (client, mut events) = AsyncClient::new(opts, 16);
    loop {
        match within(events.poll()).await? {
            Event::Incoming(Incoming::ConnAck(connack)) => {
                return Ok(Mqtt {
                    client,
                    events,
                    connack,
                    received: VecDeque::new(),
                });
            }
            _ => continue,
        }
    }
}

/// Connects or panics.
pub async fn connect(opts: MqttOptions) -> Mqtt {
    try_connect(opts).await.expect("CONNACK")
}

impl Mqtt {
    /// Polls until an incoming packet satisfies `pick`; PUBLISHes not picked are kept for
    /// [`Mqtt::next_publish`].
    pub async fn until<T>(&mut self, mut pick: impl FnMut(&Incoming) -> Option<T>) -> T {
        loop {
            match within(self.events.poll()).await {
                Ok(Event::Incoming(p)) => {
                    if let Some(t) = pick(&p) {
                        return t;
                    }
                    if let Incoming::Publish(p) = p {
                        self.received.push_back(p);
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    }

    /// Polls until an event, incoming or outgoing, satisfies `pick`; PUBLISHes not picked are
    /// kept for [`Mqtt::next_publish`].
    pub async fn until_event<T>(&mut self, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        loop {
            match within(self.events.poll()).await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                    if let Event::Incoming(Incoming::Publish(p)) = e {
                        self.received.push_back(p);
                    }
                }
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    }

    /// The next C2D PUBLISH.
    pub async fn next_publish(&mut self) -> Publish {
        if let Some(p) = self.received.pop_front() {
            return p;
        }
        self.until(|p| match p {
            Incoming::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Polls until the connection fails (the server closed it); the error.
    pub async fn until_closed(&mut self) -> ConnectionError {
        loop {
            if let Err(e) = within(self.events.poll()).await {
                return e;
            }
        }
    }

    /// Polls for `d` and returns the first error, if any (the connection must stay up).
    pub async fn idle_for(&mut self, d: Duration) -> Option<ConnectionError> {
        let end = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(end, self.events.poll()).await {
                Err(_) => return None,
                Ok(Err(e)) => return Some(e),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Sends PUBACK for `p` and polls until it is written.
    pub async fn ack(&mut self, p: &Publish) {
        self.client.ack(p).await.expect("ack queued");
        let pkid = p.pkid;
        loop {
            match within(self.events.poll()).await {
                Ok(Event::Outgoing(rumqttc::Outgoing::PubAck(id))) if id == pkid => return,
                Ok(Event::Incoming(Incoming::Publish(p))) => self.received.push_back(p),
                Ok(_) => {}
                Err(e) => panic!("connection failed: {e}"),
            }
        }
    }
}

/// A raw TLS connection to the MQTT port.
pub async fn raw_tls(emu: &RunningEmulator) -> TlsStream<TcpStream> {
    tls_to(emu, emu.endpoints().mqtt).await
}
