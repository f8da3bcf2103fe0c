//! A small HTTP/1.1 client over hyper-util for the web protocol's form posts and JSON answers,
//! and the TLS set-up the websocket shares. Plain `http://` goes through a pooled client;
//! `https://` (every real Zalo host) through rustls with the system's trusted roots plus any
//! extra roots given (a private CA, or a simulator's test certificate).

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio_rustls::{
    TlsConnector,
    client::TlsStream,
    rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, ServerName, pem::PemObject},
    },
};

use super::error::ClientError;

#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    tls: Tls,
}

/// The TLS settings, built on first use: reading the system's roots costs a few milliseconds
/// that plain-http clients (tests, the simulator) need not pay.
#[derive(Clone, Default)]
struct Tls {
    extra_roots: Arc<Vec<CertificateDer<'static>>>,
    config: Arc<OnceLock<Result<Arc<ClientConfig>, String>>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

impl Tls {
    fn config(&self) -> Result<Arc<ClientConfig>, String> {
        self.config
            .get_or_init(|| {
                let mut roots = RootCertStore::empty();
                let native = rustls_native_certs::load_native_certs();
                for error in &native.errors {
                    tracing::warn!(%error, "a system root certificate could not be read");
                }
                roots.add_parsable_certificates(native.certs);
                for root in self.extra_roots.iter() {
                    roots
                        .add(root.clone())
                        .map_err(|error| format!("invalid extra root certificate: {error}"))?;
                }
                if roots.is_empty() {
                    return Err(
                        "no trusted root certificates: install the system's CA bundle".into(),
                    );
                }
                let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
                let config = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|error| error.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Ok(Arc::new(config))
            })
            .clone()
    }
}

/// Parses PEM certificates to trust besides the system's roots.
pub(crate) fn parse_roots(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|error| ClientError::Connect(format!("invalid PEM certificate: {error}")))?;
    if roots.is_empty() {
        return Err(ClientError::Connect("no PEM certificate found".into()));
    }
    Ok(roots)
}

#[derive(Debug, Clone)]
pub(crate) struct HttpResponse {
    pub status: u16,
    /// Every `Set-Cookie` header, raw.
    pub set_cookies: Vec<String>,
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as JSON; `Unexpected` names the status when it is not.
    pub fn json(&self) -> Result<serde_json::Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            ClientError::Unexpected(format!(
                "HTTP {} with a non-JSON body: {error}",
                self.status
            ))
        })
    }
}

impl HttpClient {
    pub fn new(timeout: Duration, extra_roots: Vec<CertificateDer<'static>>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
            tls: Tls {
                extra_roots: Arc::new(extra_roots),
                config: Arc::default(),
            },
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request; `timeout` overrides the client's (long polls wait longer).
    pub async fn request(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<HttpResponse, ClientError> {
        let timeout = timeout.unwrap_or(self.timeout);
        let uri: http::Uri = url
            .parse()
            .map_err(|error| ClientError::Connect(format!("invalid URL: {error}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => {
                return Err(ClientError::Connect(format!(
                    "unsupported scheme {}",
                    other.unwrap_or("(none)")
                )));
            }
        };
        let mut builder = http::Request::builder().method(method);
        builder = if https {
            // One connection per request: HTTP/1.1 wants the origin form and a Host header.
            let host = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            builder
                .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
                .header(http::header::HOST, host)
        } else {
            builder.uri(uri.clone())
        };
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| ClientError::Connect(format!("invalid request: {error}")))?;
        let response = if https {
            tokio::time::timeout(timeout, self.send_tls(&uri, request))
                .await
                .map_err(|_| ClientError::NoAnswer("timed out".into()))??
        } else {
            tokio::time::timeout(timeout, self.client.request(request))
                .await
                .map_err(|_| ClientError::NoAnswer("timed out".into()))?
                .map_err(|error| {
                    if error.is_connect() {
                        ClientError::Connect(error.to_string())
                    } else {
                        ClientError::NoAnswer(error.to_string())
                    }
                })?
        };
        let (parts, body) = response.into_parts();
        let set_cookies = parts
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok().map(str::to_string))
            .collect();
        let body = tokio::time::timeout(timeout, body.collect())
            .await
            .map_err(|_| ClientError::NoAnswer("body timed out".into()))?
            .map_err(|error| ClientError::NoAnswer(error.to_string()))?
            .to_bytes();
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            set_cookies,
            body,
        })
    }

    /// A TCP connection to `host:port` with TLS verified for `host`. Every failure is a
    /// `Connect` error: nothing was sent yet.
    pub async fn connect_tls(
        &self,
        host: &str,
        port: u16,
    ) -> Result<TlsStream<tokio::net::TcpStream>, ClientError> {
        let config = self.tls.config().map_err(ClientError::Connect)?;
        // An IP literal in brackets is not a DNS name.
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|error| ClientError::Connect(format!("invalid host {host}: {error}")))?;
        let tcp = tokio::net::TcpStream::connect((name, port))
            .await
            .map_err(|error| ClientError::Connect(error.to_string()))?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .map_err(|error| ClientError::Connect(format!("TLS: {error}")))
    }

    async fn send_tls(
        &self,
        uri: &http::Uri,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Connect("https URL without a host".into()))?;
        let tls = self
            .connect_tls(host, uri.port_u16().unwrap_or(443))
            .await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|error| ClientError::Connect(error.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "https connection ended");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|error| ClientError::NoAnswer(error.to_string()))
    }
}

/// `a=1&b=2` from pairs, for query strings and form bodies.
pub(crate) fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}
