//! The device page's modules panel: each module of the open device with its twin.

use iothub_emulator::hub::Identity;
use iothub_protocol::module::Module;

use super::{WAIT, check, run_in_browser, shoot, sign_in, start_emulator, wd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_modules_panel_lists_the_devices_modules_with_their_twins() {
    let e = start_emulator().await;
    e.create_device("gateway-1").expect("device");
    e.hub()
        .run(|h, now| {
            h.create_module(Module::new("gateway-1", "camera"), now)?;
            let mut m = Module::new("gateway-1", "Filter");
            m.managed_by = Some("edge".into());
            h.create_module(m, now)
        })
        .expect("modules");
    let reported = serde_json::json!({ "fps": 30 });
    let reported = reported.as_object().cloned().unwrap_or_default();
    e.hub()
        .run(|h, now| {
            h.update_reported_properties(&Identity::module("gateway-1", "camera"), &reported, now)
        })
        .expect("reported");
    run_in_browser(e, async |b, e| {
        sign_in(b, e).await?;
        wd(b
            .wait_for("the device", "return !!document.querySelector('#devices button[data-device-id=\"gateway-1\"]');", WAIT)
            .await)?;
        wd(wd(b.find("#devices button[data-device-id=\"gateway-1\"]").await)?.click().await)?;
        wd(b
            .wait_for(
                "the camera module's reported properties",
                "const m = document.querySelector('#modules-list details[data-module-id=\"camera\"] .module-reported'); return !!m && m.textContent.includes('\"fps\": 30');",
                WAIT,
            )
            .await)?;
        let listed = wd(b
            .eval("return [...document.querySelectorAll('#modules-list details')].map(d => d.dataset.moduleId + ' ' + d.querySelector('summary').textContent);")
            .await)?;
        let listed: Vec<String> = listed
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        check(listed.len() == 2, format!("two modules listed: {listed:?}"))?;
        check(
            listed.iter().any(|l| l.starts_with("Filter ") && l.contains("managed by edge")),
            format!("the Filter module with its case and manager: {listed:?}"),
        )?;
        let count = wd(b.eval("return document.getElementById('modules-count').textContent;").await)?;
        check(count.as_str() == Some("(2)"), format!("module count: {count}"))?;

        // A desired change from the service shows up after the page refreshes the device.
        let w = iothub_protocol::twin::TwinWrite::from_json(&serde_json::json!({"properties": {"desired": {"zoom": 2}}}))
            .map_err(|e| e.to_string())?;
        e.hub()
            .run(|h, now| h.update_twin(&Identity::module("gateway-1", "camera"), &w, None, now))
            .map_err(|e| e.to_string())?;
        wd(b.eval("document.querySelector('#devices button[data-device-id=\"gateway-1\"]').click(); return true;").await)?;
        wd(b
            .wait_for(
                "the camera module's desired properties",
                "const m = document.querySelector('#modules-list details[data-module-id=\"camera\"] .module-desired'); return !!m && m.textContent.includes('\"zoom\": 2');",
                WAIT,
            )
            .await)?;
        wd(b
            .eval("document.getElementById('modules-section').scrollIntoView(); return true;")
            .await)?;
        shoot(b, "modules").await;
        Ok(())
    })
    .await;
}
