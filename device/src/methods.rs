//! Direct methods on the device side: the application registers handlers, the client
//! subscribes to method requests, runs the handler of each request (concurrently), and sends
//! its answer back (iothub-beyond-c2d.md 2.2).
//!
//! A request for a method with no handler is answered with status 501 and a message, so the
//! caller learns at once instead of waiting for its response timeout.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use iothub_protocol::method::JsonPayload;
use tokio::sync::mpsc;

use crate::runtime::Runtime;

/// A method call from the back end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodRequest {
    /// The method name.
    pub name: String,
    /// The payload exactly as the service sent it (`null` when it sent none).
    pub payload: JsonPayload,
}

/// A handler's answer: any status the application chooses and a JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodResponse {
    /// The status the service sees (200 for success by convention; any integer goes).
    pub status: i32,
    /// The payload the service sees.
    pub payload: JsonPayload,
}

impl MethodResponse {
    /// An answer with a payload given as JSON text; text that is not JSON becomes a JSON
    /// string holding it.
    pub fn new(status: i32, json: &str) -> Self {
        let payload = JsonPayload::from_json(json).unwrap_or_else(|_| {
            JsonPayload::from_value(json).unwrap_or_else(|_| JsonPayload::null())
        });
        MethodResponse { status, payload }
    }

    /// An answer with a `null` payload.
    pub fn status(status: i32) -> Self {
        MethodResponse {
            status,
            payload: JsonPayload::null(),
        }
    }
}

/// What a handler returns.
pub type MethodFuture = Pin<Box<dyn Future<Output = MethodResponse> + Send>>;
type Handler = Arc<dyn Fn(MethodRequest) -> MethodFuture + Send + Sync>;

/// A request as the transport received it, with what it needs to answer.
pub(crate) struct Incoming {
    pub request: MethodRequest,
    /// Where the answer goes (the transport's own reply path, e.g. the MQTT rid).
    pub reply: Box<dyn FnOnce(MethodResponse) + Send>,
}

/// Where the transport hands requests to the client.
pub(crate) type IncomingSender = mpsc::UnboundedSender<Incoming>;

/// The handlers, by method name, and the one for every other method.
#[derive(Default)]
pub(crate) struct Handlers {
    by_name: Mutex<HashMap<String, Handler>>,
    any: Mutex<Option<Handler>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Handlers {
    pub fn set<F, Fut>(&self, name: Option<&str>, handler: F)
    where
        F: Fn(MethodRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = MethodResponse> + Send + 'static,
    {
        let h: Handler = Arc::new(move |r| Box::pin(handler(r)) as MethodFuture);
        match name {
            Some(n) => {
                lock(&self.by_name).insert(n.to_owned(), h);
            }
            None => *lock(&self.any) = Some(h),
        }
    }

    fn get(&self, name: &str) -> Option<Handler> {
        lock(&self.by_name)
            .get(name)
            .cloned()
            .or_else(|| lock(&self.any).clone())
    }
}

/// Runs handlers for requests until the client stops; each request in its own task so a slow
/// handler does not hold up the others.
pub(crate) async fn dispatch(
    handlers: Arc<Handlers>,
    mut rx: mpsc::UnboundedReceiver<Incoming>,
    runtime: Runtime,
) {
    loop {
        let next = tokio::select! {
            _ = runtime.shutdown.cancelled() => return,
            n = rx.recv() => n,
        };
        let Some(Incoming { request, reply }) = next else {
            return;
        };
        match handlers.get(&request.name) {
            Some(h) => {
                let shutdown = runtime.shutdown.clone();
                runtime.tasks.spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        r = h(request) => reply(r),
                    }
                });
            }
            None => {
                tracing::warn!(method = %request.name, "no handler for a method request; answering 501");
                let text = format!("the device has no handler for method '{}'", request.name);
                let payload = JsonPayload::from_value(&text).unwrap_or_default();
                reply(MethodResponse {
                    status: 501,
                    payload,
                });
            }
        }
    }
}
