//! A minimal W3C WebDriver client over HTTP/1.1 (hyper), enough to drive chromedriver: a
//! session, navigation, elements, keys, scripts and screenshots. No Selenium crates.

use std::net::TcpListener as StdListener;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// WebDriver's code for a key (the Unicode private-use code points of the spec).
pub mod keys {
    /// Enter.
    pub const ENTER: &str = "\u{E007}";
    /// Arrow down.
    pub const DOWN: &str = "\u{E015}";
    /// Tab.
    pub const TAB: &str = "\u{E004}";
}

/// Why a WebDriver call failed.
#[derive(Debug)]
pub struct WdError(pub String);

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, WdError>;

fn err(e: impl std::fmt::Display) -> WdError {
    WdError(e.to_string())
}

/// A running chromedriver with one headless Chromium session; both end on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: TempDir,
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> Result<u16> {
    let l = StdListener::bind("127.0.0.1:0").map_err(err)?;
    Ok(l.local_addr().map_err(err)?.port())
}

/// Where the Debian packages put the binaries (overridable for other systems).
pub fn chromium_paths() -> Option<(String, String)> {
    let find = |env: &str, candidates: &[&str]| -> Option<String> {
        if let Ok(p) = std::env::var(env) {
            return Some(p);
        }
        candidates
            .iter()
            .find(|c| std::path::Path::new(c).exists())
            .map(|c| (*c).to_owned())
    };
    let chromium = find(
        "DASHBOARD_CHROMIUM",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    )?;
    let driver = find(
        "DASHBOARD_CHROMEDRIVER",
        &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
    )?;
    Some((chromium, driver))
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium with its own profile.
    pub async fn start(chromium: &str, chromedriver: &str) -> Result<Browser> {
        let port = free_port()?;
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| err(format!("cannot start {chromedriver}: {e}")))?;
        let profile =
            std::env::temp_dir().join(format!("dashboard-chromium-{}-{port}", std::process::id()));
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            _profile: TempDir(profile.clone()),
        };
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1440,960",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        // chromedriver needs a moment before it listens.
        let mut last = WdError("chromedriver did not answer".into());
        for _ in 0..50 {
            match b.call("POST", "/session", Some(&caps)).await {
                Ok(v) => {
                    b.session = v["sessionId"].as_str().unwrap_or_default().to_owned();
                    return Ok(b);
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(last)
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(err)?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(err)?;
        tokio::spawn(conn);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.port))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(err)?;
        let res = send.send_request(req).await.map_err(err)?;
        let status = res.status();
        let raw = res.into_body().collect().await.map_err(err)?.to_bytes();
        let v: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(WdError(format!(
                "{method} {path}: {status} {}",
                v["value"]["message"].as_str().unwrap_or_default()
            )));
        }
        Ok(v["value"].clone())
    }

    async fn session_call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).await
    }

    /// Opens a URL and waits for the document to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.session_call("POST", "/url", Some(&json!({ "url": url })))
            .await
            .map(drop)
    }

    /// The current URL.
    pub async fn url(&self) -> Result<String> {
        let v = self.session_call("GET", "/url", None).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> Result<Element<'_>> {
        let v = self
            .session_call(
                "POST",
                "/element",
                Some(&json!({ "using": "css selector", "value": css })),
            )
            .await
            .map_err(|e| WdError(format!("{css}: {e}")))?;
        element(self, &v)
    }

    /// The element that has the keyboard focus.
    pub async fn active(&self) -> Result<Element<'_>> {
        let v = self.session_call("GET", "/element/active", None).await?;
        element(self, &v)
    }

    /// Runs a script in the page (an `async` function body: `return await ...` works) and
    /// returns its JSON result.
    pub async fn eval(&self, script: &str) -> Result<Value> {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1]; (async () => {{ {script} }})().then(done, (e) => done({{ scriptError: String(e) }}));"
        );
        let v = self
            .session_call(
                "POST",
                "/execute/async",
                Some(&json!({ "script": wrapped, "args": [] })),
            )
            .await?;
        if let Some(e) = v.get("scriptError") {
            return Err(WdError(format!("script failed: {e}")));
        }
        Ok(v)
    }

    /// Polls a script until it returns something truthy, for up to `timeout`.
    pub async fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // A navigation in progress fails the script; try again.
            let v = self.eval(script).await.unwrap_or(Value::Null);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(WdError(format!("timed out waiting for {what}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Presses and releases each key of `keys` (text or [`keys`] codes) on whatever has the
    /// focus, as a person at the keyboard would.
    pub async fn press(&self, keys: &str) -> Result<()> {
        let mut actions = Vec::new();
        for c in keys.chars() {
            actions.push(json!({ "type": "keyDown", "value": c.to_string() }));
            actions.push(json!({ "type": "keyUp", "value": c.to_string() }));
        }
        let body = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] });
        self.session_call("POST", "/actions", Some(&body))
            .await
            .map(drop)
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        let v = self.session_call("GET", "/screenshot", None).await?;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(err)
    }

    /// Ends the session and chromedriver.
    pub async fn quit(mut self) {
        let _ = self.session_call("DELETE", "", None).await;
        let _ = self.driver.kill().await;
    }
}

fn element<'b>(browser: &'b Browser, v: &Value) -> Result<Element<'b>> {
    match v[ELEMENT].as_str() {
        Some(id) => Ok(Element {
            browser,
            id: id.to_owned(),
        }),
        None => Err(WdError(format!("not an element reference: {v}"))),
    }
}

/// An element of the page.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl Element<'_> {
    /// Clicks it.
    pub async fn click(&self) -> Result<()> {
        let path = format!("/element/{}/click", self.id);
        self.browser
            .session_call("POST", &path, Some(&json!({})))
            .await
            .map(drop)
    }

    /// Types text (or [`keys`]) into it.
    pub async fn send_keys(&self, text: &str) -> Result<()> {
        let path = format!("/element/{}/value", self.id);
        self.browser
            .session_call("POST", &path, Some(&json!({ "text": text })))
            .await
            .map(drop)
    }

    /// Its rendered text.
    pub async fn text(&self) -> Result<String> {
        let path = format!("/element/{}/text", self.id);
        let v = self.browser.session_call("GET", &path, None).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// An attribute or property.
    pub async fn property(&self, name: &str) -> Result<Value> {
        let path = format!("/element/{}/property/{name}", self.id);
        self.browser.session_call("GET", &path, None).await
    }
}
