//! The web dashboard (issue 19) in a real headless Chromium, driven over WebDriver.
//!
//! `tests/install-browser.sh` installs Debian's `chromium` and `chromium-driver` (`tests/run-all`
//! calls it). Where they are missing each test prints a `SKIP` line and passes: the browser is
//! the one thing these tests cannot do without.
//!
//! Screenshots of the main screens land in `$CARGO_TARGET_TMPDIR/dashboard/` (the README's
//! `docs/dashboard-*.png` are copies of them).

mod webdriver;

use std::time::Duration;

use iothub_device::{DeviceClient, Message};
use iothub_emulator::{Emulator, RunningEmulator};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use webdriver::{Browser, keys};

const WAIT: Duration = Duration::from_secs(10);

type Outcome = Result<(), String>;

fn check(ok: bool, what: impl Into<String>) -> Outcome {
    if ok { Ok(()) } else { Err(what.into()) }
}

fn wd<T>(r: Result<T, webdriver::WdError>) -> Result<T, String> {
    r.map_err(|e| e.0)
}

/// Starts a browser, or says why the test skips.
async fn browser() -> Option<Browser> {
    let Some((chromium, driver)) = webdriver::chromium_paths() else {
        println!(
            "SKIP dashboard browser test: chromium or chromedriver is not installed (run tests/install-browser.sh)"
        );
        return None;
    };
    match Browser::start(&chromium, &driver).await {
        Ok(b) => Some(b),
        Err(e) => panic!("chromium is installed but did not start: {e}"),
    }
}

/// Runs the steps, always closes the browser and the emulator, then reports.
async fn run_in_browser<F>(emulator: RunningEmulator, steps: F)
where
    F: AsyncFnOnce(&Browser, &RunningEmulator) -> Outcome,
{
    let Some(b) = browser().await else {
        emulator.shutdown().await;
        return;
    };
    let outcome = steps(&b, &emulator).await;
    if outcome.is_err()
        && let Ok(png) = b.screenshot().await
    {
        save("failure", &png);
    }
    b.quit().await;
    emulator.shutdown().await;
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

fn save(name: &str, png: &[u8]) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("dashboard-{name}.png"));
    if std::fs::write(&path, png).is_ok() {
        println!("screenshot: {}", path.display());
    }
}

async fn shoot(b: &Browser, name: &str) {
    if let Ok(png) = b.screenshot().await {
        save(name, &png);
    }
}

async fn start_emulator() -> RunningEmulator {
    Emulator::builder()
        .virtual_clock(true)
        .start()
        .await
        .expect("emulator starts")
}

fn base(e: &RunningEmulator) -> String {
    format!("http://localhost:{}", e.endpoints().http)
}

/// Opens the banner URL in the browser: the page with a session cookie.
async fn sign_in(b: &Browser, e: &RunningEmulator) -> Outcome {
    wd(b.goto(e.dashboard_url()).await)?;
    wd(b.wait_for(
        "the live stream",
        "return document.getElementById('live')?.textContent === 'live'",
        WAIT,
    )
    .await)?;
    Ok(())
}

fn js_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_the_page_explains_and_the_api_refuses() {
    run_in_browser(start_emulator().await, async |b, e| {
        let root = base(e);
        wd(b.goto(&format!("{root}/")).await)?;
        let text = wd(wd(b.find("#login").await)?.text().await)?;
        check(
            text.contains("printed when it started") && text.contains("token"),
            format!("the page says how to get in: {text}"),
        )?;
        shoot(b, "login").await;
        let status = wd(b
            .eval("return (await fetch('/dashboard/api/devices')).status;")
            .await)?;
        check(status == 401, format!("API without a session: {status}"))?;

        wd(b.goto(&format!("{root}/?token=not-the-token")).await)?;
        let text = wd(wd(b.find("#login").await)?.text().await)?;
        check(
            text.contains("not this emulator"),
            format!("a wrong token: {text}"),
        )?;
        let status = wd(b
            .eval("return (await fetch('/dashboard/api/devices')).status;")
            .await)?;
        check(status == 401, "a wrong token gives no session")?;
        Ok(())
    })
    .await;
}

/// A page of another origin on the same machine (same site, so the strict cookie still goes
/// along) that posts a form at the dashboard: the classic cross-site request forgery.
async fn serve_forger(target: String) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let page = format!(
        r#"<!doctype html><title>forger</title><form method="POST" action="{target}/dashboard/api/devices/create" enctype="text/plain"><input name='{{"deviceId":"forged","x":"' value='"}}'></form>"#
    );
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0_u8; 4096];
            let _ = s.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_origin_post_is_refused_even_with_the_cookie() {
    run_in_browser(start_emulator().await, async |b, e| {
        sign_in(b, e).await?;
        let (port, forger) = serve_forger(base(e)).await;
        wd(b.goto(&format!("http://localhost:{port}/")).await)?;
        wd(b.eval("document.forms[0].submit(); return true;").await)?;
        let body = wd(b
            .wait_for(
                "the dashboard's answer to the forged form",
                "return location.pathname === '/dashboard/api/devices/create' ? document.body.innerText : '';",
                WAIT,
            )
            .await)?;
        forger.abort();
        let body = body.as_str().unwrap_or_default().to_owned();
        check(
            body.contains("cross-origin"),
            format!("the form post is refused as cross-origin: {body}"),
        )?;
        check(
            e.hub().read(|h| h.get_device("forged")).is_err(),
            "no device was created by the forged form",
        )?;

        // From a page of another site, a script's fetch (with the CSRF header) fails its
        // CORS preflight and never reaches the hub.
        wd(b.goto(&format!("http://127.0.0.1:{}/health", e.endpoints().http)).await)?;
        let script = format!(
            "try {{ const r = await fetch({url}, {{ method: 'POST', credentials: 'include', headers: {{ 'content-type': 'application/json', 'x-csrf-token': 'guess' }}, body: JSON.stringify({{ deviceId: 'forged2' }}) }}); return 'status ' + r.status; }} catch (e) {{ return 'blocked'; }}",
            url = js_string(&format!("{}/dashboard/api/devices/create", base(e)))
        );
        let r = wd(b.eval(&script).await)?;
        check(r == "blocked", format!("cross-site fetch: {r}"))?;
        check(
            e.hub().read(|h| h.get_device("forged2")).is_err(),
            "no device was created by the cross-site fetch",
        )?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_a_device_send_c2d_see_it_completed_with_feedback_and_live_telemetry() {
    let e = start_emulator().await;
    // Neighbours, so the screenshots look like a hub in use.
    for id in ["gateway-a", "pump-7", "sensor-3"] {
        e.create_device(id).expect("device");
    }
    e.hub()
        .run(|h, now| h.enqueue_c2d("pump-7", Message::new("start"), now))
        .expect("c2d");
    run_in_browser(e, async |b, e| {
        sign_in(b, e).await?;
        let url = wd(b.url().await)?;
        check(!url.contains("token"), format!("the token left the address bar: {url}"))?;
        let cookie = wd(b.eval("return document.cookie;").await)?;
        check(cookie == "", format!("the session cookie is HttpOnly: {cookie}"))?;
        wd(b.eval("window.__noReload = true; return true;").await)?;

        // Create a device from the page.
        wd(wd(b.find("#create-id").await)?.send_keys("thermostat-1").await)?;
        wd(wd(b.find("#create-btn").await)?.click().await)?;
        wd(b
            .wait_for(
                "the new device in the list and the detail",
                "return !!document.querySelector('#devices tr[data-device-id=\"thermostat-1\"]') && document.getElementById('detail-title').textContent === 'Device thermostat-1';",
                WAIT,
            )
            .await)?;
        check(
            e.hub().read(|h| h.get_device("thermostat-1")).is_ok(),
            "the hub has the device",
        )?;
        let cs = wd(wd(b.find("#conn-string").await)?.property("value").await)?;
        let cs = cs.as_str().unwrap_or_default().to_owned();
        check(
            cs.starts_with("HostName=localhost;DeviceId=thermostat-1;SharedAccessKey="),
            format!("connection string: {cs}"),
        )?;

        // Send it a C2D message with a property and full feedback.
        wd(wd(b.find("#c2d-body").await)?.send_keys("set-point 21.5").await)?;
        wd(wd(b.find("#c2d-id").await)?.send_keys("msg-from-browser").await)?;
        wd(wd(b.find("#c2d-props").await)?.send_keys("unit=celsius").await)?;
        wd(wd(b.find("#c2d-send").await)?.click().await)?;
        wd(b
            .wait_for(
                "the message in the queue",
                "const t = document.querySelector('#c2d-queue tbody').innerText; return t.includes('set-point 21.5') && t.includes('unit=celsius') && t.includes('enqueued');",
                WAIT,
            )
            .await)?;
        let queued = e.hub().read(|h| h.c2d_view("thermostat-1")).map_err(|e| e.to_string())?;
        check(queued.len() == 1, "the hub queued one message")?;
        check(queued[0].message.ack == "full", "with full feedback")?;
        shoot(b, "device").await;

        // A real device client receives and completes it: the queue empties, feedback arrives.
        let key = e
            .hub()
            .read(|h| h.get_device("thermostat-1"))
            .map_err(|e| e.to_string())?;
        let cs = format!(
            "HostName=localhost;DeviceId=thermostat-1;SharedAccessKey={}",
            key.primary_key().unwrap_or_default()
        );
        let client = DeviceClient::builder(&cs)
            .map_err(|e| e.to_string())?
            .port(e.endpoints().mqtt)
            .platform_roots(false)
            .trust_ca_from_env(false)
            .trust_ca_pem(e.ca_pem())
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let got = tokio::time::timeout(WAIT, client.recv())
            .await
            .map_err(|_| "the device got no message".to_owned())?
            .map_err(|e| e.to_string())?;
        check(got.body_str() == Some("set-point 21.5"), "the device got the page's message")?;
        wd(b
            .wait_for(
                "the queue to empty and the feedback to arrive",
                "return document.querySelector('#c2d-queue tbody').innerText.includes('The queue is empty') && document.getElementById('feedback').innerText.includes('msg-from-browser') && document.getElementById('feedback').innerText.includes('Success') && document.querySelector('#devices tr[data-device-id=\"thermostat-1\"]').innerText.includes('Connected') && document.querySelector('#devices tr[data-device-id=\"thermostat-1\"]').innerText.includes('MQTT');",
                WAIT,
            )
            .await)?;

        // Telemetry shows up live in the feed and in the device's recent telemetry.
        for i in 0..3 {
            let mut m = Message::new(format!("{{\"temperature\":{}}}", 20 + i));
            m.properties.insert("source", "sensor");
            client.send_event(m).await.map_err(|e| e.to_string())?;
        }
        wd(b
            .wait_for(
                "live telemetry",
                "const f = document.getElementById('feed').innerText; return f.includes('{\"temperature\":22}') && f.includes('thermostat-1') && f.includes('source=sensor') && document.getElementById('device-telemetry').innerText.includes('{\"temperature\":22}');",
                WAIT,
            )
            .await)?;
        let kept = wd(b.eval("return window.__noReload === true;").await)?;
        check(kept == true, "everything arrived without reloading the page")?;
        shoot(b, "overview").await;
        client.close().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_usable_with_the_keyboard() {
    let e = start_emulator().await;
    for id in ["kb-1", "kb-2", "kb-3"] {
        e.create_device(id).expect("device");
    }
    run_in_browser(e, async |b, e| {
        sign_in(b, e).await?;
        wd(b.wait_for(
            "three devices",
            "return document.querySelectorAll('#devices tbody button.link').length === 3;",
            WAIT,
        )
        .await)?;
        // `/` jumps to the filter; typing narrows the list.
        wd(b.press("/").await)?;
        let focused = wd(wd(b.active().await)?.property("id").await)?;
        check(
            focused == "device-filter",
            format!("'/' focuses the filter, not {focused}"),
        )?;
        wd(b.press("kb-").await)?;
        // Tab reaches the first device; arrows move; Enter opens.
        wd(
            b.eval("document.querySelector('#devices tbody button.link').focus(); return true;")
                .await,
        )?;
        wd(b.press(keys::DOWN).await)?;
        let focused = wd(wd(b.active().await)?.text().await)?;
        check(
            focused == "kb-2",
            format!("arrow down moves to the next device, not {focused}"),
        )?;
        wd(b.press(keys::ENTER).await)?;
        wd(b.wait_for(
            "the detail of kb-2",
            "return document.getElementById('detail-title').textContent === 'Device kb-2';",
            WAIT,
        )
        .await)?;
        // Focus moved to the detail; tabbing onwards reaches its controls.
        let focused = wd(wd(b.active().await)?.property("id").await)?;
        check(
            focused == "detail-title",
            format!("opening a device moves focus to it, not {focused}"),
        )?;
        wd(b.press(keys::TAB).await)?;
        let focused = wd(wd(b.active().await)?.property("id").await)?;
        check(
            focused == "conn-string",
            format!("tab reaches the connection string, not {focused}"),
        )?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_devices_page_through_quickly() {
    let e = start_emulator().await;
    e.hub().run(|h, now| {
        for i in 0..10_000 {
            let d = iothub_protocol::registry::Device::new(format!("device-{i:05}"));
            h.create_device(d, now).expect("device");
        }
    });
    run_in_browser(e, async |b, e| {
        wd(b.goto(e.dashboard_url()).await)?;
        // Milliseconds from the start of the navigation (the token redirect included) to the
        // first 50 rows on screen, measured by the page's own clock.
        let first_page: Value = wd(b
            .wait_for(
                "the first page",
                "if (!window.__rows) { window.__rows = new Promise((done) => { const t = () => document.querySelectorAll('#devices tbody button.link').length === 50 ? done(performance.now()) : requestAnimationFrame(t); t(); }); } return await window.__rows;",
                WAIT,
            )
            .await)?;
        let info = wd(wd(b.find("#page-info").await)?.text().await)?;
        check(info == "1–50 of 10000", format!("page info: {info}"))?;
        let api: Value = wd(b
            .eval("const t = performance.now(); await (await fetch('/dashboard/api/devices?limit=50')).json(); return performance.now() - t;")
            .await)?;
        wd(wd(b.find("#next-page").await)?.click().await)?;
        wd(b
            .wait_for("the second page", "return document.getElementById('page-info').textContent === '51–100 of 10000' && document.querySelector('#devices tbody button.link').textContent === 'device-00050';", WAIT)
            .await)?;
        wd(wd(b.find("#device-filter").await)?.send_keys("09999").await)?;
        wd(b
            .wait_for("the filtered list", "const l = document.querySelectorAll('#devices tbody button.link'); return l.length === 1 && l[0].textContent === 'device-09999';", WAIT)
            .await)?;
        println!(
            "figure: 10,000 devices: navigation start to the first 50 rows on screen {:.0} ms (debug build, token redirect included); one page of 50 from the API {:.1} ms",
            first_page.as_f64().unwrap_or_default(),
            api.as_f64().unwrap_or_default()
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twin_panel_shows_reported_and_edits_desired_and_a_method_is_invoked() {
    use iothub_emulator::hub::Identity;

    let e = start_emulator().await;
    e.create_device("pump-1").expect("device");
    let identity = Identity::device("pump-1");
    let reported = serde_json::json!({ "firmware": "1.4.2", "rpm": 1200 });
    let reported = reported.as_object().cloned().unwrap_or_default();
    e.hub()
        .run(|h, now| h.update_reported_properties(&identity, &reported, now))
        .expect("reported");
    // A device connection listening for methods, answering the way a device would.
    let mut listener = e.hub().listen_methods(&identity).expect("listen");
    let device = tokio::spawn(async move {
        let request = listener.recv().await?;
        let body = format!(
            "{{\"method\":\"{}\",\"got\":{}}}",
            request.name,
            request.payload.as_str()
        );
        listener.respond(&request.rid.to_string(), 200, body.as_bytes());
        Some(request.name)
    });
    run_in_browser(e, async |b, e| {
        sign_in(b, e).await?;
        wd(b
            .wait_for("the device", "return !!document.querySelector('#devices button[data-device-id=\"pump-1\"]');", WAIT)
            .await)?;
        wd(wd(b.find("#devices button[data-device-id=\"pump-1\"]").await)?.click().await)?;
        wd(b
            .wait_for(
                "the reported properties",
                "return document.getElementById('twin-reported').textContent.includes('1.4.2');",
                WAIT,
            )
            .await)?;

        // Edit the desired properties in the page.
        wd(b
            .eval("const t = document.getElementById('twin-desired'); t.value = ''; t.focus(); return true;")
            .await)?;
        wd(b.press("{\"targetRpm\": 1500}").await)?;
        wd(wd(b.find("#twin-save").await)?.click().await)?;
        wd(b
            .wait_for(
                "the desired version to move",
                "return document.getElementById('twin-version').textContent.includes('desired $version 2');",
                WAIT,
            )
            .await)?;
        let twin = e
            .hub()
            .read(|h| h.get_twin(&Identity::device("pump-1")))
            .map_err(|e| e.to_string())?;
        let twin = serde_json::to_value(twin).map_err(|e| e.to_string())?;
        check(
            twin["properties"]["desired"]["targetRpm"] == 1500,
            format!("the hub has the desired property: {twin}"),
        )?;

        // Invoke a direct method from the page.
        wd(wd(b.find("#method-name").await)?.send_keys("reboot").await)?;
        wd(wd(b.find("#method-payload").await)?.send_keys("{\"delay\":5}").await)?;
        wd(wd(b.find("#method-invoke").await)?.click().await)?;
        let result = wd(b
            .wait_for(
                "the method's answer",
                "const t = document.getElementById('method-result').textContent; return t.startsWith('status') ? t : '';",
                WAIT,
            )
            .await)?;
        let result = result.as_str().unwrap_or_default().to_owned();
        check(
            result.starts_with("status 200") && result.contains("\"delay\": 5") && result.contains("reboot"),
            format!("the device's answer is shown: {result}"),
        )?;
        wd(b
            .eval("document.getElementById('twin-section').scrollIntoView(); return true;")
            .await)?;
        shoot(b, "twin").await;
        Ok(())
    })
    .await;
    let called = device.await.expect("device task");
    assert_eq!(called.as_deref(), Some("reboot"));
}
