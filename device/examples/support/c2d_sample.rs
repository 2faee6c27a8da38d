//! The seed tutorial's `SimulatedDevice.py`, in Rust: everything the `simulated_device`
//! example does. It is included with `#[path]` by the example and by its end-to-end test.

use iothub_device::Properties;

/// The four lines printed for the `count`-th message received:
///
/// ```text
/// Message received
///     Data: <<{body}>>
///     Properties: {'Property': 'PropMsg_0'}
///     Total calls received: 1
/// ```
///
/// The body is printed as text (invalid UTF-8 replaced), the properties as Python prints
/// `message.custom_properties`, a `dict` of `str`.
pub fn render(body: &[u8], properties: &Properties, count: u64) -> String {
    format!(
        "Message received\n    Data: <<{}>>\n    Properties: {}\n    Total calls received: {}\n",
        String::from_utf8_lossy(body),
        python_dict(properties),
        count
    )
}

/// `repr()` of a Python `dict` of `str` to `str`, in insertion order: `{'a': 'b', 'c': 'd'}`.
pub fn python_dict(properties: &Properties) -> String {
    let items: Vec<String> = properties
        .iter()
        .map(|(k, v)| format!("{}: {}", python_str(k), python_str(v)))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// `repr()` of a Python `str`: single quotes unless the text has a `'` and no `"`; backslash,
/// the quote and control characters escaped as Python escapes them.
pub fn python_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let n = u32::from(c);
                if n <= 0xff {
                    out.push_str(&format!("\\x{n:02x}"));
                } else {
                    out.push_str(&format!("\\u{n:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Receives messages and prints each with [`render`] until `stop` resolves; returns how many
/// were received. Fails with the client's error if it stops (bad credentials, closed, ...).
pub async fn receive_and_print<W: std::io::Write>(
    client: &iothub_device::DeviceClient,
    stop: impl std::future::Future<Output = ()>,
    out: &mut W,
) -> Result<u64, iothub_device::Error> {
    tokio::pin!(stop);
    let mut received: u64 = 0;
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(received),
            message = client.recv() => {
                let message = message?;
                received += 1;
                let text = render(message.body(), message.properties(), received);
                // A closed stdout must not stop the device; there is nowhere to report it.
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
        }
    }
}

/// Where the connection string comes from when no argument is given.
pub const CONNECTION_STRING_VAR: &str = "IOTHUB_DEVICE_CONNECTION_STRING";

/// The program: connection string from the first argument or [`CONNECTION_STRING_VAR`],
/// connect (trusting `IOTHUB_CA_CERT` as well as the platform roots), print every message
/// until Ctrl-C, then close and say goodbye. Exit code 2 for a missing connection string, 1
/// when the client fails.
#[allow(dead_code)]
pub async fn main() -> std::process::ExitCode {
    use iothub_device::display_chain;
    use std::process::ExitCode;

    let Some(connection_string) = std::env::args()
        .nth(1)
        .or_else(|| std::env::var(CONNECTION_STRING_VAR).ok())
    else {
        eprintln!(
            "usage: simulated_device \"<device connection string>\" (or set {CONNECTION_STRING_VAR})"
        );
        return ExitCode::from(2);
    };

    println!("Starting the IoT Hub Rust sample...");
    let client = match iothub_device::DeviceClient::from_connection_string(&connection_string).await
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {}", display_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    // Direct method `reboot`: answers 200 with when it "rebooted" (the payload's `delay`, if
    // any, is echoed). Printed only when called, so the C2D output stays the tutorial's.
    let methods = client
        .on_method("reboot", |request| async move {
            println!(
                "Method reboot called with payload {}",
                request.payload.as_str()
            );
            iothub_device::MethodResponse::new(
                200,
                &format!(
                    r#"{{"rebooted":true,"request":{}}}"#,
                    request.payload.as_str()
                ),
            )
        })
        .await;
    if let Err(e) = methods {
        eprintln!("direct methods unavailable: {}", display_chain(&e));
    }
    println!("IoTHubDeviceClient waiting for commands, press Ctrl-C to exit");

    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let code = match receive_and_print(&client, ctrl_c, &mut std::io::stdout()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", display_chain(&e));
            ExitCode::FAILURE
        }
    };
    client.close().await;
    println!("IoTHubDeviceClient sample stopped");
    code
}
