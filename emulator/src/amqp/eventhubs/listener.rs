//! Plain AMQP (no TLS) for Event Hubs clients given a `UseDevelopmentEmulator=true` connection
//! string: `azure-eventhub` ≥ 5.12 and `@azure/core-amqp` ≥ 4.3 then connect without TLS to
//! port 5672 (iothub-beyond-c2d.md 3.8). The same AMQP stack answers, so every node is served,
//! but the printed connection strings point only Event Hubs clients here.

use std::time::Duration;

use tokio::net::TcpListener;

use crate::context::Context;

/// Pause after an accept error (e.g. too many open files) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts plain AMQP connections until shutdown; each one runs on its own task.
pub async fn run(listener: TcpListener, ctx: Context) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "Event Hubs AMQP accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let ctx2 = ctx.clone();
        ctx.tasks.spawn(async move {
            crate::amqp::serve_connection(tcp, addr.to_string(), ctx2).await;
        });
    }
}
