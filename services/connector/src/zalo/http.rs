//! A small HTTP/1.1 client for the Zalo APIs and the simulator's webhook pushes. Plain
//! `http://` goes through a pooled client; `https://` (every real Zalo host) through rustls
//! with the system's trusted roots, plus any extra roots configured (a private CA, or the
//! simulator's test certificate).

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

pub use ::http::Method;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio_rustls::{
    TlsConnector,
    rustls::{
        ClientConfig, RootCertStore,
        pki_types::{CertificateDer, ServerName, pem::PemObject},
    },
};

#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    tls: Tls,
}

/// The TLS settings, built on first https use: reading the system's roots costs a few
/// milliseconds that plain-http clients (tests, the simulator) need not pay.
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

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request never reached the server: safe to send again.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Sent, but no answer: the server may have acted on it.
    #[error("no answer: {0}")]
    NoAnswer(String),
    #[error("bad request: {0}")]
    Request(String),
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Parses PEM certificates (for `extra_root_certs_pem`).
pub fn parse_roots(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|error| format!("invalid PEM certificate: {error}"))?;
    if roots.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(roots)
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Self {
        Self::with_roots(timeout, Vec::new())
    }

    /// Trusts `extra_roots` besides the system's roots for https.
    pub fn with_roots(timeout: Duration, extra_roots: Vec<CertificateDer<'static>>) -> Self {
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

    pub async fn request(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<HttpResponse, HttpError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|error: http::uri::InvalidUri| HttpError::Request(error.to_string()))?;
        let https = uri.scheme_str() == Some("https");
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
            .map_err(|error| HttpError::Request(error.to_string()))?;
        let response = if https {
            tokio::time::timeout(self.timeout, self.send_tls(&uri, request))
                .await
                .map_err(|_| HttpError::NoAnswer("timed out".into()))??
        } else {
            tokio::time::timeout(self.timeout, self.client.request(request))
                .await
                .map_err(|_| HttpError::NoAnswer("timed out".into()))?
                .map_err(|error| {
                    if error.is_connect() {
                        HttpError::Connect(error.to_string())
                    } else {
                        HttpError::NoAnswer(error.to_string())
                    }
                })?
        };
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(self.timeout, body.collect())
            .await
            .map_err(|_| HttpError::NoAnswer("body timed out".into()))?
            .map_err(|error| HttpError::NoAnswer(error.to_string()))?
            .to_bytes();
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// Connects, verifies the server's certificate and sends `request` over TLS. Every
    /// failure before the request is written is a `Connect` error: nothing was sent.
    async fn send_tls(
        &self,
        uri: &http::Uri,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, HttpError> {
        let host = uri
            .host()
            .ok_or_else(|| HttpError::Request("https URL without a host".into()))?;
        let port = uri.port_u16().unwrap_or(443);
        let config = self.tls.config().map_err(HttpError::Connect)?;
        // An IP literal in brackets is not a DNS name.
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|error| HttpError::Request(format!("invalid host {host}: {error}")))?;
        let tcp = tokio::net::TcpStream::connect((name, port))
            .await
            .map_err(|error| HttpError::Connect(error.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .map_err(|error| HttpError::Connect(format!("TLS: {error}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|error| HttpError::Connect(error.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "https connection ended");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|error| HttpError::NoAnswer(error.to_string()))
    }
}
