//! Twins, queries and bulk registry writes over HTTPS (iothub-beyond-c2d.md 1.6, 1.7):
//! `GET/PATCH/PUT /twins/{id}`, `POST /devices/query` paged with `x-ms-continuation`, and bulk
//! `POST /devices`. Requests are the ones the Node and Python service SDKs send.

use futures_util::Stream;
use http::Method;
use iothub_protocol::bulk::{BulkRegistryOperationResult, ExportImportDevice, MAX_BULK_OPERATIONS};
use iothub_protocol::device_id::encode_path_segment;
use iothub_protocol::query::{
    CONTINUATION_HEADER, ITEM_TYPE_HEADER, MAX_ITEM_COUNT_HEADER, QueryItemType, QueryPage,
    QuerySpecification,
};
use iothub_protocol::twin::Twin;
use serde_json::Value;

use crate::client::ServiceClient;
use crate::error::Error;
use crate::https::{Call, IfMatch};

fn twin_path(device_id: &str) -> String {
    format!("/twins/{}", encode_path_segment(device_id))
}

fn json_body(v: &impl serde::Serialize, what: &str) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|e| Error::ArgumentInvalid {
        message: format!("cannot serialize the {what}: {e}"),
    })
}

impl ServiceClient {
    /// Reads a device twin (`GET /twins/{id}`): tags, desired and reported properties with
    /// their `$metadata` and `$version`, the twin `version` and `etag`.
    ///
    /// Errors: [`Error::DeviceNotFound`], [`Error::Unauthorized`], ...
    pub async fn get_twin(&self, device_id: &str) -> Result<Twin, Error> {
        let path = twin_path(device_id);
        self.https()
            .call_json("get twin", Call::new(Method::GET, &path))
            .await
    }

    /// Merges `patch` into a twin (`PATCH /twins/{id}`), e.g.
    /// `{"tags": {"floor": 3}, "properties": {"desired": {"fw": "1.2", "old": null}}}`
    /// (`null` removes a key). With [`IfMatch::Etag`] the write fails with
    /// [`Error::PreconditionFailed`] when the twin changed since that etag was read; connected
    /// devices that subscribed receive the desired part. Returns the updated twin.
    pub async fn update_twin(
        &self,
        device_id: &str,
        patch: &Value,
        if_match: IfMatch,
    ) -> Result<Twin, Error> {
        self.write_twin(Method::PATCH, device_id, patch, &if_match, "update twin")
            .await
    }

    /// Replaces a twin's tags and desired properties with those of `twin` (`PUT /twins/{id}`);
    /// a section `twin` leaves out becomes empty. Same `if_match` rules as
    /// [`update_twin`](Self::update_twin).
    pub async fn replace_twin(
        &self,
        device_id: &str,
        twin: &Value,
        if_match: IfMatch,
    ) -> Result<Twin, Error> {
        self.write_twin(Method::PUT, device_id, twin, &if_match, "replace twin")
            .await
    }

    async fn write_twin(
        &self,
        method: Method,
        device_id: &str,
        body: &Value,
        if_match: &IfMatch,
        what: &str,
    ) -> Result<Twin, Error> {
        let path = twin_path(device_id);
        let call = Call {
            if_match: Some(if_match),
            body: Some(json_body(body, "twin")?),
            ..Call::new(method, &path)
        };
        self.https().call_json(what, call).await
    }

    /// One page of a twin query (`POST /devices/query`): at most `page_size` items (the hub
    /// serves 1 to 1000) from `continuation` on (`None` for the first page). The page's
    /// [`continuation_token`](QueryPage::continuation_token) is `None` on the last page.
    ///
    /// Errors: [`Error::ArgumentInvalid`] for a query outside the supported SQL subset (the
    /// message names the part), ...
    pub async fn query_page(
        &self,
        query: &str,
        page_size: usize,
        continuation: Option<&str>,
    ) -> Result<QueryPage, Error> {
        let spec = QuerySpecification {
            query: query.to_owned(),
        };
        let mut headers = vec![(MAX_ITEM_COUNT_HEADER, page_size.to_string())];
        if let Some(c) = continuation {
            headers.push((CONTINUATION_HEADER, c.to_owned()));
        }
        let call = Call {
            body: Some(json_body(&spec, "query")?),
            headers,
            ..Call::new(Method::POST, "/devices/query")
        };
        let (headers, bytes) = self.https().call_with_headers(call).await?;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let items: Vec<Value> = serde_json::from_slice(&bytes).map_err(|e| {
            Error::protocol(format!("the hub's query answer is not a JSON array: {e}"))
        })?;
        Ok(QueryPage {
            items,
            item_type: header(ITEM_TYPE_HEADER)
                .and_then(QueryItemType::parse)
                .unwrap_or(QueryItemType::Raw),
            continuation_token: header(CONTINUATION_HEADER)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        })
    }

    /// Every item of a twin query, fetched page by page as the stream is polled (pages of
    /// `page_size`). The stream ends after the last page, or after the first error.
    ///
    /// ```no_run
    /// # async fn run(client: iothub_service::ServiceClient) -> Result<(), iothub_service::Error> {
    /// use futures_util::StreamExt;
    /// let mut rows = std::pin::pin!(client.query("SELECT * FROM devices WHERE tags.floor = 3", 100));
    /// while let Some(row) = rows.next().await {
    ///     println!("{}", row?["deviceId"]);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn query(
        &self,
        query: &str,
        page_size: usize,
    ) -> impl Stream<Item = Result<Value, Error>> + Send + 'static {
        enum State {
            Next(Option<String>),
            Items(std::vec::IntoIter<Value>, Option<String>),
            Done,
        }
        let client = self.clone();
        let query = query.to_owned();
        futures_util::stream::unfold(State::Next(None), move |mut state| {
            let client = client.clone();
            let query = query.clone();
            async move {
                loop {
                    state = match state {
                        State::Done => return None,
                        State::Items(mut items, next) => match items.next() {
                            Some(item) => return Some((Ok(item), State::Items(items, next))),
                            None => match next {
                                Some(token) => State::Next(Some(token)),
                                None => State::Done,
                            },
                        },
                        State::Next(token) => {
                            match client.query_page(&query, page_size, token.as_deref()).await {
                                Ok(page) => {
                                    State::Items(page.items.into_iter(), page.continuation_token)
                                }
                                Err(e) => return Some((Err(e), State::Done)),
                            }
                        }
                    };
                }
            }
        })
    }

    /// Creates, updates and deletes up to 100 identities in one request (`POST /devices`),
    /// each as its [`ImportMode`](iothub_protocol::bulk::ImportMode) says. Failures of single
    /// operations do not fail the call: they are listed in the result's `errors`, and
    /// `is_successful` is false.
    ///
    /// Errors: [`Error::ArgumentInvalid`] for an empty list or one that names a device twice,
    /// [`Error::Hub`] (`TooManyDevices`) for more than 100, ...
    pub async fn bulk_registry(
        &self,
        operations: &[ExportImportDevice],
    ) -> Result<BulkRegistryOperationResult, Error> {
        if operations.len() > MAX_BULK_OPERATIONS {
            return Err(Error::ArgumentInvalid {
                message: format!(
                    "{} bulk operations; the hub takes at most {MAX_BULK_OPERATIONS} per request",
                    operations.len()
                ),
            });
        }
        let call = Call {
            body: Some(json_body(&operations, "bulk operations")?),
            ..Call::new(Method::POST, "/devices")
        };
        self.https().call_json("bulk registry", call).await
    }
}
