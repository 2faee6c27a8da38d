//! Module identities (iothub-beyond-c2d.md 4): the registry routes under
//! `/devices/{id}/modules`, module twins at `/twins/{id}/modules/{mid}` and module methods at
//! `/twins/{id}/modules/{mid}/methods`, called like their device counterparts (`registry.rs`,
//! `twins.rs`, `methods.rs`) with the same [`IfMatch`] rules and the same errors, plus
//! [`Error::ModuleNotFound`] and [`Error::ModuleAlreadyExistsOnDevice`].
//!
//! Requests are the ones the Node and Python service SDKs send: no `If-Match` on create,
//! `If-Match: "*"` for a forced update or delete, a quoted etag for a conditional one.

use http::Method;
use iothub_protocol::device_id::encode_path_segment;
use iothub_protocol::module::Module;
use iothub_protocol::twin::Twin;
use serde_json::Value;

use crate::client::ServiceClient;
use crate::error::Error;
use crate::https::{Call, IfMatch};
use crate::methods::{MethodRequest, MethodResponse};

fn module_path(device_id: &str, module_id: &str) -> String {
    format!(
        "/devices/{}/modules/{}",
        encode_path_segment(device_id),
        encode_path_segment(module_id)
    )
}

fn module_twin_path(device_id: &str, module_id: &str) -> String {
    format!(
        "/twins/{}/modules/{}",
        encode_path_segment(device_id),
        encode_path_segment(module_id)
    )
}

impl IfMatch {
    /// The module's etag when it has one (as returned by a get, create or update), else
    /// [`IfMatch::Any`]; see [`IfMatch::from_device`].
    pub fn from_module(module: &Module) -> IfMatch {
        match module.etag.as_deref() {
            Some(e) if !e.is_empty() => IfMatch::Etag(e.to_owned()),
            _ => IfMatch::Any,
        }
    }
}

impl ServiceClient {
    /// Registers a module on an existing device and returns it as stored, with the keys the
    /// hub generated when `module` has none (`PUT /devices/{id}/modules/{mid}` without
    /// `If-Match`). Give keys in `module.authentication.symmetric_key` to choose them.
    ///
    /// ```no_run
    /// # async fn run(client: iothub_service::ServiceClient) -> Result<(), iothub_service::Error> {
    /// use iothub_service::Module;
    /// let module = client.create_module(&Module::new("dev1", "filter")).await?;
    /// let connection_string = format!(
    ///     "HostName={};DeviceId=dev1;ModuleId=filter;SharedAccessKey={}",
    ///     client.host_name(),
    ///     module.primary_key().unwrap_or_default(),
    /// );
    /// # let _ = connection_string; Ok(()) }
    /// ```
    ///
    /// Errors: [`Error::ModuleAlreadyExistsOnDevice`], [`Error::DeviceNotFound`] (no such
    /// device), [`Error::ArgumentInvalid`] (a bad module id or key), [`Error::Unauthorized`],
    /// ...
    pub async fn create_module(&self, module: &Module) -> Result<Module, Error> {
        let path = module_path(&module.device_id, &module.module_id);
        let call = Call {
            body: Some(crate::registry::identity_body(module, "module")?),
            ..Call::new(Method::PUT, &path)
        };
        self.https().call_json("create module", call).await
    }

    /// Reads a module (`GET /devices/{id}/modules/{mid}`).
    ///
    /// Errors: [`Error::ModuleNotFound`], [`Error::DeviceNotFound`], ...
    pub async fn get_module(&self, device_id: &str, module_id: &str) -> Result<Module, Error> {
        let path = module_path(device_id, module_id);
        self.https()
            .call_json("get module", Call::new(Method::GET, &path))
            .await
    }

    /// Lists the modules of a device (`GET /devices/{id}/modules`), in id order.
    ///
    /// Errors: [`Error::DeviceNotFound`], ...
    pub async fn list_modules(&self, device_id: &str) -> Result<Vec<Module>, Error> {
        let path = format!("/devices/{}/modules", encode_path_segment(device_id));
        self.https()
            .call_json("list modules", Call::new(Method::GET, &path))
            .await
    }

    /// Replaces a module (`PUT /devices/{id}/modules/{mid}` with `If-Match`) and returns it as
    /// stored, with its new etag. Use [`IfMatch::from_module`] for an update that fails with
    /// [`Error::PreconditionFailed`] when someone else changed the module since it was read,
    /// or [`IfMatch::Any`] to force it.
    ///
    /// ```no_run
    /// # async fn run(client: iothub_service::ServiceClient) -> Result<(), iothub_service::Error> {
    /// use iothub_service::IfMatch;
    /// let mut module = client.get_module("dev1", "filter").await?;
    /// module.managed_by = Some("ops".into());
    /// let module = client.update_module(&module, IfMatch::from_module(&module)).await?;
    /// # let _ = module; Ok(()) }
    /// ```
    ///
    /// Errors: [`Error::PreconditionFailed`], [`Error::ModuleNotFound`], ...
    pub async fn update_module(&self, module: &Module, if_match: IfMatch) -> Result<Module, Error> {
        let path = module_path(&module.device_id, &module.module_id);
        let call = Call {
            if_match: Some(&if_match),
            body: Some(crate::registry::identity_body(module, "module")?),
            ..Call::new(Method::PUT, &path)
        };
        self.https().call_json("update module", call).await
    }

    /// Deletes a module and its twin (`DELETE /devices/{id}/modules/{mid}` with `If-Match`).
    ///
    /// Errors: [`Error::ModuleNotFound`], [`Error::PreconditionFailed`], ...
    pub async fn delete_module(
        &self,
        device_id: &str,
        module_id: &str,
        if_match: IfMatch,
    ) -> Result<(), Error> {
        let path = module_path(device_id, module_id);
        let call = Call {
            if_match: Some(&if_match),
            ..Call::new(Method::DELETE, &path)
        };
        self.https().call(call).await?;
        Ok(())
    }

    /// Reads a module twin (`GET /twins/{id}/modules/{mid}`); as
    /// [`get_twin`](Self::get_twin), with [`Twin::module_id`] set.
    ///
    /// Errors: [`Error::ModuleNotFound`], [`Error::DeviceNotFound`], ...
    pub async fn get_module_twin(&self, device_id: &str, module_id: &str) -> Result<Twin, Error> {
        let path = module_twin_path(device_id, module_id);
        self.https()
            .call_json("get module twin", Call::new(Method::GET, &path))
            .await
    }

    /// Merges `patch` into a module twin (`PATCH /twins/{id}/modules/{mid}`); as
    /// [`update_twin`](Self::update_twin). The module, if connected and subscribed, receives
    /// the desired part.
    ///
    /// ```no_run
    /// # async fn run(client: iothub_service::ServiceClient) -> Result<(), iothub_service::Error> {
    /// use iothub_service::IfMatch;
    /// let patch = serde_json::json!({"properties": {"desired": {"threshold": 10}}});
    /// let twin = client
    ///     .update_module_twin("dev1", "filter", &patch, IfMatch::Any)
    ///     .await?;
    /// # let _ = twin; Ok(()) }
    /// ```
    pub async fn update_module_twin(
        &self,
        device_id: &str,
        module_id: &str,
        patch: &Value,
        if_match: IfMatch,
    ) -> Result<Twin, Error> {
        let path = module_twin_path(device_id, module_id);
        self.write_module_twin(Method::PATCH, &path, patch, &if_match, "update module twin")
            .await
    }

    /// Replaces a module twin's tags and desired properties (`PUT /twins/{id}/modules/{mid}`);
    /// as [`replace_twin`](Self::replace_twin).
    pub async fn replace_module_twin(
        &self,
        device_id: &str,
        module_id: &str,
        twin: &Value,
        if_match: IfMatch,
    ) -> Result<Twin, Error> {
        let path = module_twin_path(device_id, module_id);
        self.write_module_twin(Method::PUT, &path, twin, &if_match, "replace module twin")
            .await
    }

    async fn write_module_twin(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        if_match: &IfMatch,
        what: &str,
    ) -> Result<Twin, Error> {
        let body = serde_json::to_vec(body).map_err(|e| Error::ArgumentInvalid {
            message: format!("cannot serialize the twin: {e}"),
        })?;
        let call = Call {
            if_match: Some(if_match),
            body: Some(body),
            ..Call::new(method, path)
        };
        self.https().call_json(what, call).await
    }

    /// Invokes a direct method on a module and waits for its answer
    /// (`POST /twins/{id}/modules/{mid}/methods`); as
    /// [`invoke_method`](Self::invoke_method).
    ///
    /// ```no_run
    /// # async fn run(client: iothub_service::ServiceClient) -> Result<(), iothub_service::Error> {
    /// use iothub_service::MethodRequest;
    /// let request = MethodRequest::new("reset").with_json(r#"{"hard":false}"#)?;
    /// let answer = client.invoke_module_method("dev1", "filter", &request).await?;
    /// println!("{} {}", answer.status, answer.payload.as_str());
    /// # Ok(()) }
    /// ```
    ///
    /// Errors: [`Error::DeviceNotOnline`] (the module is not connected and listening),
    /// [`Error::GatewayTimeout`], [`Error::ModuleNotFound`], [`Error::DeviceNotFound`],
    /// [`Error::ArgumentInvalid`], ...
    pub async fn invoke_module_method(
        &self,
        device_id: &str,
        module_id: &str,
        request: &MethodRequest,
    ) -> Result<MethodResponse, Error> {
        let path = format!("{}/methods", module_twin_path(device_id, module_id));
        crate::methods::invoke_at(self.https(), &path, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded() {
        assert_eq!(module_path("d 1", "m#1"), "/devices/d%201/modules/m%231");
        assert_eq!(module_twin_path("d", "m/x"), "/twins/d/modules/m%2Fx");
    }

    #[test]
    fn module_bodies_carry_only_what_a_caller_sets() {
        let mut m = Module::new("d1", "m1");
        m.managed_by = Some("ops".into());
        m.cloud_to_device_message_count = 4;
        let b = crate::registry::identity_body(&m, "module").unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "moduleId": "m1",
                "deviceId": "d1",
                "managedBy": "ops",
                "authentication": {"symmetricKey": {}, "type": "sas"},
            })
        );
    }

    #[test]
    fn if_match_from_a_module() {
        let mut m = Module::new("d", "m");
        assert_eq!(IfMatch::from_module(&m), IfMatch::Any);
        m.etag = Some("MQ==".into());
        assert_eq!(IfMatch::from_module(&m), IfMatch::Etag("MQ==".into()));
    }
}
