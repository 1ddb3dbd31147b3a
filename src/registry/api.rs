//! The distribution API's blob and manifest calls for one repository.

use reqwest::header::{
    HeaderValue, ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE,
};
use reqwest::{Method, Url};

use super::client::{path_of, Client, Payload, Request};
use super::RegistryError;
use crate::format::Digest;
use crate::oci::{BlobWriter, MAX_MANIFEST_BYTES, MEDIA_TYPE_INDEX, MEDIA_TYPE_MANIFEST};

/// Docker's manifest media types, accepted on reads so the error names what came.
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A repository in a registry, with the token scopes its calls need.
pub struct Repository<'c> {
    client: &'c Client,
    name: String,
    pull: Vec<String>,
    push: Vec<String>,
}

/// How a cross-repository mount went.
pub(crate) enum Mount {
    /// The registry linked the blob: nothing to upload.
    Mounted,
    /// It did not; the upload session it opened instead, to upload into.
    Session(Url),
}

impl<'c> Repository<'c> {
    /// `name` in `client`'s registry.
    pub fn new(client: &'c Client, name: &str) -> Self {
        Repository {
            client,
            name: name.into(),
            pull: vec![format!("repository:{name}:pull")],
            push: vec![format!("repository:{name}:pull,push")],
        }
    }

    /// The repository's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client it goes through.
    pub fn client(&self) -> &Client {
        self.client
    }

    /// Whether the repository has the blob; the size the registry reports if so.
    pub async fn blob_size(
        &self,
        digest: &Digest,
        writing: bool,
    ) -> Result<Option<u64>, RegistryError> {
        let scopes = if writing { &self.push } else { &self.pull };
        let url = format!("/v2/{}/blobs/{digest}", self.name);
        let resp = self
            .client
            .send(&Request::new(Method::HEAD, url, scopes))
            .await?;
        match resp.status().as_u16() {
            200 => Ok(Some(
                resp.headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0),
            )),
            404 => Ok(None),
            _ => {
                let path = path_of(resp.url().as_str()).to_string();
                Err(self.client.status_error(resp, "HEAD", &path).await)
            }
        }
    }

    /// Asks the registry to link a blob it holds in repository `from`.
    pub(crate) async fn mount_blob(
        &self,
        digest: &Digest,
        from: &str,
    ) -> Result<Mount, RegistryError> {
        let scopes = [self.push[0].clone(), format!("repository:{from}:pull")];
        let url = format!(
            "/v2/{}/blobs/uploads/?mount={digest}&from={from}",
            self.name
        );
        let resp = self
            .client
            .send(&Request::new(Method::POST, url, &scopes))
            .await?;
        let resp = self.client.expect(resp, &Method::POST, &[201, 202]).await?;
        if resp.status().as_u16() == 201 {
            Ok(Mount::Mounted)
        } else {
            self.location(&resp).map(Mount::Session)
        }
    }

    /// Uploads a blob (POST for a session, then one PUT), starting a new session on a retry.
    /// `session` is one already open, such as a refused mount's.
    pub async fn upload_blob(
        &self,
        digest: &Digest,
        body: Payload,
        mut session: Option<Url>,
    ) -> Result<(), RegistryError> {
        let mut attempt = 0;
        loop {
            let result = self.try_upload(digest, &body, session.take()).await;
            match result {
                Err(e) if attempt < self.client.retries() && upload_retryable(&e) => {
                    attempt += 1;
                    tokio::time::sleep(self.client.delay(attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn try_upload(
        &self,
        digest: &Digest,
        body: &Payload,
        session: Option<Url>,
    ) -> Result<(), RegistryError> {
        let mut url = match session {
            Some(u) => u,
            None => {
                let start = format!("/v2/{}/blobs/uploads/", self.name);
                let mut post = Request::new(Method::POST, start, &self.push);
                // The whole upload is retried (by the caller), not its steps.
                post.retry = false;
                let resp = self.client.send(&post).await?;
                let resp = self.client.expect(resp, &Method::POST, &[202]).await?;
                self.location(&resp)?
            }
        };
        url.query_pairs_mut().append_pair("digest", &digest.oci());
        let mut put = Request::new(Method::PUT, url.to_string(), &self.push);
        put.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        put.body = Some(body.clone());
        // A session is used once: a retry starts a new one (above).
        put.retry = false;
        let resp = self.client.send(&put).await?;
        self.client.expect(resp, &Method::PUT, &[201, 204]).await?;
        Ok(())
    }

    fn location(&self, resp: &reqwest::Response) -> Result<Url, RegistryError> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                self.client
                    .protocol_error("an upload session came without a Location")
            })?;
        resp.url().join(loc).map_err(|e| {
            self.client
                .protocol_error(format!("bad upload Location {loc:?}: {e}"))
        })
    }

    /// Downloads a blob of at most `size` bytes into `into`, checking its digest. A transfer
    /// that breaks is retried from where it broke (`Range`), or from the start when the
    /// registry answers a range with the whole blob. On any failure nothing of it is kept.
    /// Returns its size.
    pub async fn fetch_blob(
        &self,
        digest: &Digest,
        size: u64,
        mut into: BlobWriter,
    ) -> Result<u64, RegistryError> {
        let url = format!("/v2/{}/blobs/{digest}", self.name);
        let from = format!("{}/{}", self.client.registry(), self.name);
        let bad = |problem: String| RegistryError::BadBlob {
            from: from.clone(),
            digest: *digest,
            problem,
        };
        let mut attempt = 0;
        loop {
            let mut req = Request::new(Method::GET, url.clone(), &self.pull);
            let have = into.len();
            if have > 0 {
                let range = HeaderValue::from_str(&format!("bytes={have}-"))
                    .expect("a number is a header value");
                req.headers.insert(RANGE, range);
            }
            let resp = self.client.send(&req).await?;
            let ok: &[u16] = if have > 0 { &[200, 206] } else { &[200] };
            let mut resp = self.client.expect(resp, &Method::GET, ok).await?;
            if resp.status().as_u16() == 206 {
                let range = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(range_start);
                if range != Some(have) {
                    return Err(bad(format!(
                        "asked for bytes from {have}, got {:?}",
                        resp.headers().get(CONTENT_RANGE)
                    )));
                }
                log::info!("GET {url}: resuming at byte {have}");
            } else {
                into.reset()?;
            }
            let mut broken = None;
            loop {
                match resp.chunk().await {
                    Ok(Some(bytes)) => {
                        if into.len() + bytes.len() as u64 > size {
                            return Err(bad(format!(
                                "more than the {size} bytes its descriptor says"
                            )));
                        }
                        into.write(&bytes)?;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        broken = Some(e);
                        break;
                    }
                }
            }
            match broken {
                Some(e) if attempt < self.client.retries() => {
                    log::info!("GET {url}: {e}; retrying");
                    attempt += 1;
                    tokio::time::sleep(self.client.delay(attempt)).await;
                    continue;
                }
                Some(e) => return Err(self.client.http_error(format!("GET {url}"), e)),
                None => {}
            }
            return into
                .commit()
                .map_err(|e| RegistryError::from_commit(e, from));
        }
    }

    /// A manifest's bytes and media type, by tag or digest (a digest is checked).
    pub async fn fetch_manifest(&self, target: &str) -> Result<(Vec<u8>, String), RegistryError> {
        let url = format!("/v2/{}/manifests/{target}", self.name);
        let mut req = Request::new(Method::GET, url, &self.pull);
        req.headers.insert(
            ACCEPT,
            HeaderValue::from_str(
                &[
                    MEDIA_TYPE_MANIFEST,
                    MEDIA_TYPE_INDEX,
                    DOCKER_MANIFEST,
                    DOCKER_LIST,
                ]
                .join(", "),
            )
            .expect("static media types"),
        );
        let resp = self.client.send(&req).await?;
        let mut resp = self.client.expect(resp, &Method::GET, &[200]).await?;
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .unwrap_or_default();
        let mut body = Vec::new();
        while let Some(bytes) = resp.chunk().await.map_err(|e| {
            self.client
                .http_error(format!("GET {}", path_of(resp.url().as_str())), e)
        })? {
            body.extend_from_slice(&bytes);
            if body.len() as u64 > MAX_MANIFEST_BYTES {
                return Err(self.client.protocol_error(format!(
                    "the manifest {target} of {} is over {MAX_MANIFEST_BYTES} bytes",
                    self.name
                )));
            }
        }
        if let Ok(d) = Digest::parse(target) {
            let actual = Digest::of(&body);
            if actual != d {
                return Err(self.client.protocol_error(format!(
                    "the manifest {target} of {} hashes to {actual}",
                    self.name
                )));
            }
        }
        Ok((body, media_type))
    }

    /// Stores a manifest under a tag or its digest.
    pub async fn put_manifest(
        &self,
        target: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let url = format!("/v2/{}/manifests/{target}", self.name);
        let mut req = Request::new(Method::PUT, url, &self.push);
        req.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type)
                .map_err(|_| self.client.protocol_error("bad media type"))?,
        );
        req.body = Some(Payload::Bytes(bytes.to_vec().into()));
        let resp = self.client.send(&req).await?;
        self.client.expect(resp, &Method::PUT, &[201, 204]).await?;
        Ok(())
    }
}

/// Failures a fresh upload session may get past: transport errors, and statuses that mean
/// the registry's trouble or a session it lost.
fn upload_retryable(e: &RegistryError) -> bool {
    match e {
        RegistryError::Http { .. } => true,
        RegistryError::Status(_) => {
            matches!(e.status(), Some(404 | 408 | 429 | 500 | 502 | 503 | 504))
        }
        _ => false,
    }
}

/// The first byte a `Content-Range: bytes FIRST-LAST/TOTAL` names.
fn range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (first, _) = rest.split_once('-')?;
    first.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::range_start;

    #[test]
    fn content_ranges_give_their_first_byte() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start(" bytes 0-0/*"), Some(0));
        for bad in ["bytes */200", "items 1-2/3", "bytes -5/9", ""] {
            assert_eq!(range_start(bad), None, "{bad}");
        }
    }
}
