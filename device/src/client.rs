//! The device client: telemetry out, C2D messages in, connection state, shutdown.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use iothub_protocol::Message;
use iothub_protocol::message::MAX_D2C_SIZE;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::ReusableBoxFuture;

use crate::backoff::Backoff;
use crate::config::{CompletionMode, DeviceClientBuilder, Options, Transport};
use crate::error::Error;
use crate::https::{self, Demand, Https};
use crate::message::{ReceivedMessage, Settle};
use crate::mqtt::{self, Command, Commands};
use crate::runtime::Runtime;
use crate::state::{ConnectionEvents, ConnectionState, DisconnectReason};
use crate::token::Auth;

enum Backend {
    Mqtt {
        cmd: Commands,
    },
    Https {
        https: Arc<Https>,
        demand: Arc<Demand>,
    },
}

struct Inner {
    device_id: String,
    /// Set when the client is a module identity.
    module_id: Option<String>,
    transport: Transport,
    completion: CompletionMode,
    backend: Backend,
    c2d_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<ReceivedMessage>>,
    c2d_enabled: AtomicBool,
    /// The MQTT connection messages may still be settled on.
    generation: Arc<AtomicU64>,
    runtime: Runtime,
    /// Method handlers, and the requests waiting for the dispatcher (taken when it starts).
    methods: Arc<crate::methods::Handlers>,
    method_rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<crate::methods::Incoming>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: stop the tasks (the MQTT driver sends DISCONNECT).
        self.runtime.shutdown.cancel();
    }
}

/// A connection to the hub as one device.
///
/// Cheap to clone; all clones share one connection, so one task can wait for messages while
/// another sends telemetry. The connection closes when [`close`](Self::close) is called or
/// the last clone (and the last [`Messages`] stream) is dropped.
///
/// See the [crate documentation](crate) for an example and for the delivery guarantees.
#[derive(Clone)]
pub struct DeviceClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DeviceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceClient")
            .field("device_id", &self.inner.device_id)
            .field("module_id", &self.inner.module_id)
            .field("transport", &self.inner.transport)
            .field("state", &self.inner.runtime.state.current())
            .finish_non_exhaustive()
    }
}

impl DeviceClient {
    /// Connects with every option at its default: MQTT on port 8883 (or a `:port` written in
    /// the host name), the platform's root certificates plus `IOTHUB_CA_CERT` if set, one-hour
    /// tokens, automatic completion.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), iothub_device::Error> {
    /// let client = iothub_device::DeviceClient::from_connection_string(
    ///     "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=...",
    /// )
    /// .await?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub async fn from_connection_string(connection_string: &str) -> Result<Self, Error> {
        DeviceClientBuilder::new(connection_string)?.connect().await
    }

    /// A builder to set options before connecting; see [`DeviceClientBuilder`].
    pub fn builder(connection_string: &str) -> Result<DeviceClientBuilder, Error> {
        DeviceClientBuilder::new(connection_string)
    }

    /// The device id (for a module identity, the device the module belongs to).
    pub fn device_id(&self) -> &str {
        &self.inner.device_id
    }

    /// The module id when the connection string named one (`ModuleId=`): the client is then
    /// that module identity, with its own twin, methods and telemetry; `None` for a device.
    pub fn module_id(&self) -> Option<&str> {
        self.inner.module_id.as_deref()
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    /// Sends a telemetry (device-to-cloud) message and resolves when the hub acknowledged it:
    /// MQTT PUBACK, or HTTPS `204`.
    ///
    /// The message id, correlation id, user id, content type and encoding, expiry and the
    /// application properties travel with it. Over MQTT a send made while the client is
    /// reconnecting waits for the connection; a message sent on a connection that dropped
    /// before its PUBACK is sent again on the next one, so the hub may get it twice
    /// (at-least-once). Dropping the returned future does not withdraw the message.
    ///
    /// A message over the hub's 256 KB limit is refused here with
    /// [`Error::MessageTooLarge`].
    pub async fn send_event(&self, message: Message) -> Result<(), Error> {
        self.check_open()?;
        let size = message.size();
        if size > MAX_D2C_SIZE {
            return Err(Error::MessageTooLarge {
                size,
                max: MAX_D2C_SIZE,
            });
        }
        match &self.inner.backend {
            Backend::Mqtt { cmd } => {
                let topic = mqtt::d2c_topic(
                    &self.inner.device_id,
                    self.inner.module_id.as_deref(),
                    &message,
                )?;
                let (reply, rx) = oneshot::channel();
                cmd.send(Command::Send {
                    topic,
                    payload: Bytes::from(message.body),
                    reply,
                })
                .map_err(|_| self.terminal_error())?;
                rx.await.map_err(|_| self.terminal_error())?
            }
            Backend::Https { https, .. } => https.send_event(&message).await.map_err(|e| match e {
                Error::Closed => self.terminal_error(),
                e => e,
            }),
        }
    }

    /// Answers direct-method calls of `name` with `handler` (replacing an earlier one), and
    /// returns once the hub listens: over MQTT, once it granted the subscription to
    /// `$iothub/methods/POST/#` (renewed after a lost session). Handlers run concurrently,
    /// one task per request; a method with no handler is answered with status 501.
    ///
    /// ```no_run
    /// # async fn run(client: iothub_device::DeviceClient) -> Result<(), iothub_device::Error> {
    /// use iothub_device::MethodResponse;
    /// client
    ///     .on_method("reboot", |req| async move {
    ///         println!("reboot with {}", req.payload.as_str());
    ///         MethodResponse::new(200, r#"{"rebooting":true}"#)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: [`Error::NotSupported`] over HTTPS (the hub has no HTTPS method transport),
    /// [`Error::Closed`], or the subscription's refusal.
    pub async fn on_method<F, Fut>(&self, name: &str, handler: F) -> Result<(), Error>
    where
        F: Fn(crate::MethodRequest) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::MethodResponse> + Send + 'static,
    {
        self.inner.methods.set(Some(name), handler);
        self.enable_methods().await
    }

    /// Answers every method without a handler of its own with `handler`; see
    /// [`on_method`](Self::on_method).
    pub async fn on_any_method<F, Fut>(&self, handler: F) -> Result<(), Error>
    where
        F: Fn(crate::MethodRequest) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = crate::MethodResponse> + Send + 'static,
    {
        self.inner.methods.set(None, handler);
        self.enable_methods().await
    }

    async fn enable_methods(&self) -> Result<(), Error> {
        self.check_open()?;
        let Backend::Mqtt { cmd } = &self.inner.backend else {
            return Err(Error::NotSupported {
                operation: "direct methods (IoT Hub delivers them over MQTT or AMQP)",
                transport: self.inner.transport,
            });
        };
        let rx = self
            .inner
            .method_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rx) = rx {
            let runtime = self.inner.runtime.clone();
            runtime.tasks.spawn(crate::methods::dispatch(
                self.inner.methods.clone(),
                rx,
                runtime.clone(),
            ));
        }
        let (reply, granted) = oneshot::channel();
        cmd.send(Command::EnableMethods { reply })
            .map_err(|_| self.terminal_error())?;
        granted.await.map_err(|_| self.terminal_error())?
    }

    /// Waits for the next cloud-to-device message.
    ///
    /// The first call turns C2D on: over MQTT the client subscribes to
    /// `devices/{id}/messages/devicebound/#` (and subscribes again whenever the hub lost the
    /// session); over HTTPS it polls while someone waits here. In
    /// [`CompletionMode::Automatic`] the message is completed as it is returned.
    ///
    /// Fails with [`Error::Closed`] once the client is closed, or with the error that
    /// stopped it (for example [`Error::Unauthorized`] or [`Error::TokenExpired`]). A module
    /// identity gets [`Error::NotSupportedForModule`]: IoT Hub has no C2D for modules.
    ///
    /// Cancel-safe: if the future is dropped before it resolves, no message is lost.
    pub async fn recv(&self) -> Result<ReceivedMessage, Error> {
        self.check_open()?;
        if let Some(module_id) = &self.inner.module_id {
            return Err(Error::NotSupportedForModule {
                operation: "receiving cloud-to-device messages",
                module: format!("{}/{module_id}", self.inner.device_id),
            });
        }
        self.enable_c2d();
        let inner = &self.inner;
        let _waiting = match &inner.backend {
            Backend::Https { demand, .. } => Some(demand.enter()),
            Backend::Mqtt { .. } => None,
        };
        let mut rx = tokio::select! {
            biased;
            _ = inner.runtime.shutdown.cancelled() => return Err(self.terminal_error()),
            rx = inner.c2d_rx.lock() => rx,
        };
        loop {
            let next = tokio::select! {
                biased;
                _ = inner.runtime.shutdown.cancelled() => return Err(self.terminal_error()),
                m = rx.recv() => m,
            };
            let Some(mut message) = next else {
                return Err(self.terminal_error());
            };
            if let Backend::Https { demand, .. } = &inner.backend {
                demand.taken();
            }
            if let Some(generation) = message.mqtt_generation()
                && generation != inner.generation.load(Ordering::Acquire)
            {
                // Its connection is gone, so it cannot be acknowledged; the hub delivers it
                // again on the current connection. Dropping it here avoids a duplicate.
                continue;
            }
            if inner.completion == CompletionMode::Automatic {
                self.complete_now(&mut message);
            }
            return Ok(message);
        }
    }

    /// The cloud-to-device messages as a [`Stream`], for use with `StreamExt` or
    /// [`Messages::next`]. Each item is what [`recv`](Self::recv) would return; the stream
    /// ends when the client closes or stops (see [`connection_state`](Self::connection_state)
    /// for why). For a module identity the stream ends at once (see [`recv`](Self::recv)).
    ///
    /// ```no_run
    /// # async fn run(client: iothub_device::DeviceClient) {
    /// let mut messages = client.messages();
    /// while let Some(message) = messages.next().await {
    ///     println!("{:?}", message.body_str());
    /// }
    /// # }
    /// ```
    pub fn messages(&self) -> Messages {
        Messages::new(self.clone())
    }

    /// The current connection state, as a [`watch`] that also tells of changes (it keeps only
    /// the latest; use [`connection_events`](Self::connection_events) to see every change).
    ///
    /// ```no_run
    /// # async fn run(client: iothub_device::DeviceClient) {
    /// let mut state = client.connection_state();
    /// let _ = state.wait_for(|s| s.is_connected()).await;
    /// # }
    /// ```
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.runtime.state.subscribe()
    }

    /// Every connection-state change from now on, in order.
    pub fn connection_events(&self) -> ConnectionEvents {
        self.inner.runtime.state.events()
    }

    /// Closes the client: over MQTT sends DISCONNECT, stops every task, and waits for them.
    /// Sends still waiting fail with [`Error::Closed`], and [`recv`](Self::recv) returns it.
    /// Messages taken but not yet completed (manual mode) stay with the hub, which delivers
    /// them again. Calling it again, or on another clone, just waits.
    pub async fn close(&self) {
        let inner = &self.inner;
        let runtime = &inner.runtime;
        if let Backend::Https { .. } = inner.backend {
            runtime.state.set(ConnectionState::Disconnected {
                reason: DisconnectReason::Closed,
                retrying: false,
            });
        }
        runtime.shutdown.cancel();
        runtime.tasks.close();
        runtime.tasks.wait().await;
    }

    /// The MQTT command queue for features in other files (`twin.rs`), or `None` over HTTPS.
    pub(crate) fn mqtt_commands(&self) -> Result<Option<&Commands>, Error> {
        self.check_open()?;
        Ok(match &self.inner.backend {
            Backend::Mqtt { cmd } => Some(cmd),
            Backend::Https { .. } => None,
        })
    }

    /// Why the client can no longer be used (for features in other files).
    pub(crate) fn stopped_error(&self) -> Error {
        self.terminal_error()
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.inner.runtime.shutdown.is_cancelled() {
            Err(self.terminal_error())
        } else {
            Ok(())
        }
    }

    /// Why the client stopped: the fatal error, or [`Error::Closed`].
    fn terminal_error(&self) -> Error {
        self.inner
            .runtime
            .state
            .current()
            .fatal_error()
            .unwrap_or(Error::Closed)
    }

    fn enable_c2d(&self) {
        if self.inner.c2d_enabled.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Backend::Mqtt { cmd } = &self.inner.backend {
            let _ = cmd.send(Command::EnableC2d);
        }
    }

    /// Automatic completion: settle as the message is handed over.
    fn complete_now(&self, message: &mut ReceivedMessage) {
        match message.take_settle() {
            Settle::Done => {}
            Settle::Mqtt {
                generation,
                pkid,
                tx,
            } => {
                let _ = tx.send(Command::Settle {
                    generation,
                    pkid,
                    ack: true,
                    reply: None,
                });
            }
            Settle::Https { lock_token, https } => {
                self.inner.runtime.tasks.spawn(async move {
                    if let Err(e) = https.complete(&lock_token).await {
                        tracing::warn!(error = %e, "automatic completion over HTTPS failed; the hub will deliver the message again");
                    }
                });
            }
        }
    }
}

/// Starts a client for validated options.
pub(crate) async fn start(options: Options) -> Result<DeviceClient, Error> {
    let device_id = options.conn.device_id.clone();
    let module_id = options.conn.module_id.clone();
    let auth = Auth::new(&options.conn, options.tokens)?;
    let trust = options.trust.clone();
    // Reading files and the platform store blocks; keep it off the async workers.
    let roots = tokio::task::spawn_blocking(move || trust.load())
        .await
        .map_err(|e| Error::Tls {
            message: "loading the trusted certificates failed".into(),
            source: Some(iothub_protocol::client::Cause::new(e)),
        })??;
    let (host, port) = options.endpoint();
    let backoff = Backoff::new(options.backoff_initial, options.backoff_max);
    let runtime = Runtime::new();
    let generation = Arc::new(AtomicU64::new(0));
    // Unbounded, as `mqtt::C2dSender` explains; the HTTPS poller only fetches a message
    // while a receiver waits for one.
    let (c2d_tx, c2d_rx) = mpsc::unbounded_channel();
    // Unbounded: the hub bounds requests by the calls in flight, and the driver must never
    // wait for the application.
    let (methods_tx, methods_rx) = mpsc::unbounded_channel();

    let backend = match options.transport {
        Transport::Mqtt | Transport::MqttWebSocket => {
            mqtt::check_device_id(&device_id, module_id.as_deref())?;
            let alpn: &[&[u8]] = if options.transport == Transport::MqttWebSocket {
                &[b"http/1.1"]
            } else {
                &[]
            };
            let params = mqtt::Params {
                device_id: device_id.clone(),
                module_id: module_id.clone(),
                host_name: options.conn.host_name.clone(),
                host,
                port,
                transport: options.transport,
                tls: roots.client_config(alpn)?,
                keep_alive: options.keep_alive,
                connect_timeout: options.connect_timeout,
                backoff,
            };
            let cmd = mqtt::start(mqtt::Setup {
                params,
                auth,
                c2d: c2d_tx,
                methods: methods_tx,
                generation: generation.clone(),
                runtime: runtime.clone(),
            })
            .await?;
            Backend::Mqtt { cmd }
        }
        Transport::Https => {
            let params = https::Params {
                device_id: device_id.clone(),
                host,
                port,
                tls: roots.client_config(&[b"http/1.1"])?,
                connect_timeout: options.connect_timeout,
                request_timeout: options.request_timeout,
            };
            let https = Arc::new(Https::new(params, auth, runtime.clone())?);
            if let Err(e) = https.open().await {
                runtime.shutdown.cancel();
                return Err(e);
            }
            let demand = Arc::new(Demand::default());
            runtime.tasks.spawn(https::poll_loop(
                https.clone(),
                demand.clone(),
                c2d_tx,
                options.poll_interval,
                backoff,
            ));
            Backend::Https { https, demand }
        }
    };

    Ok(DeviceClient {
        inner: Arc::new(Inner {
            device_id,
            module_id,
            transport: options.transport,
            completion: options.completion,
            backend,
            c2d_rx: tokio::sync::Mutex::new(c2d_rx),
            c2d_enabled: AtomicBool::new(false),
            generation,
            runtime,
            methods: Arc::default(),
            method_rx: std::sync::Mutex::new(Some(methods_rx)),
        }),
    })
}

/// The stream of cloud-to-device messages from [`DeviceClient::messages`].
///
/// It implements [`Stream`]; [`next`](Self::next) is the same without an extension trait.
/// It keeps the client open while it exists.
pub struct Messages {
    client: DeviceClient,
    next: ReusableBoxFuture<'static, Result<ReceivedMessage, Error>>,
    done: bool,
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages")
            .field("client", &self.client)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Messages {
    fn new(client: DeviceClient) -> Self {
        let c = client.clone();
        Messages {
            client,
            next: ReusableBoxFuture::new(async move { c.recv().await }),
            done: false,
        }
    }

    /// The next message; `None` once the client has closed or stopped.
    pub async fn next(&mut self) -> Option<ReceivedMessage> {
        poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Messages {
    type Item = ReceivedMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.next.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(message)) => {
                let c = self.client.clone();
                self.next.set(async move { c.recv().await });
                Poll::Ready(Some(message))
            }
            Poll::Ready(Err(_)) => {
                self.done = true;
                Poll::Ready(None)
            }
        }
    }
}
