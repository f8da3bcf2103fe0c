//! Logging in, listening and sending as a personal account.
//!
//! - [`Client`]: the hosts to talk to; starts a QR login ([`Client::login_qr`]) or logs in
//!   with saved [`Credentials`] ([`Client::login`]).
//! - [`Session`]: a logged-in account: send text, images, files and stickers, look up users,
//!   [`Session::listen`].
//! - [`Listener`]: the websocket, its reconnects and its events.

mod api;
pub mod error;
mod listener;
mod login;
mod media;
mod qr;
mod transport;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use api::UserInfo;
pub use error::ClientError;
pub use listener::{
    Listener, ListenerConfig, ListenerEvent, ResumePoint, SkippedFrames, StopReason,
};
pub use login::{RetryPolicy, ServiceMap, Session, SocketSettings};
pub use media::{FileUpload, Image, ShareFileSettings, Sticker, UploadedFile, UploadedImage};
pub use qr::{QrConfig, QrEvent};

/// `zpw_type` / `type`: the web client.
pub const API_TYPE: u32 = 30;
/// `zpw_ver` / `client_version` the web client announces.
pub const API_VERSION: u32 = 671;

/// What the web client sends as Origin and Referer: the servers check them.
pub(crate) const ORIGIN: &str = "https://chat.zalo.me";
pub(crate) const REFERER: &str = "https://chat.zalo.me/";
/// The user agent a QR login uses when the caller gives none.
pub const DEFAULT_USER_AGENT: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// One cookie of the account's browser session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    /// As the server set it (e.g. `.zalo.me`); informational: every cookie goes to every host.
    #[serde(default)]
    pub domain: String,
}

impl std::fmt::Debug for Cookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Cookie values are the account: never in logs.
        f.debug_struct("Cookie")
            .field("name", &self.name)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

/// What logs an account in without a QR scan. The cookies are bound to the user agent (and,
/// per users' reports, the IP) they were issued to: keep all four together.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub imei: String,
    pub cookies: Vec<Cookie>,
    pub user_agent: String,
    pub language: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("cookies", &self.cookies)
            .field("user_agent", &self.user_agent)
            .field("language", &self.language)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `Cookie` header value.
    pub fn cookie_header(&self) -> String {
        cookie_header(&self.cookies)
    }
}

pub(crate) fn cookie_header(cookies: &[Cookie]) -> String {
    cookies
        .iter()
        .map(|cookie| format!("{}={}", cookie.name, cookie.value))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Applies `Set-Cookie` headers to a jar: a later cookie of the same name and domain replaces
/// the earlier one, `Max-Age=0` removes it.
pub(crate) fn apply_set_cookies(jar: &mut Vec<Cookie>, headers: &[String]) {
    for header in headers {
        let mut parts = header.split(';');
        let Some((name, value)) = parts.next().and_then(|pair| pair.split_once('=')) else {
            continue;
        };
        let (name, value) = (name.trim().to_string(), value.trim().to_string());
        let mut domain = String::new();
        let mut removed = false;
        for attribute in parts {
            let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
            match key.trim().to_ascii_lowercase().as_str() {
                "domain" => domain = val.trim().to_string(),
                "max-age" => removed = val.trim().parse::<i64>().is_ok_and(|age| age <= 0),
                _ => {}
            }
        }
        jar.retain(|cookie| !(cookie.name == name && cookie.domain == domain));
        if !removed {
            jar.push(Cookie {
                name,
                value,
                domain,
            });
        }
    }
}

/// The hosts the client talks to. The defaults are Zalo's; tests and `giao dev` point all
/// three at a simulator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// QR login (`https://id.zalo.me`).
    pub id_base: String,
    /// `getLoginInfo` / `getServerInfo` (`https://wpa.chat.zalo.me`).
    pub wpa_base: String,
    /// `jr/userinfo` after a QR login (`https://jr.chat.zalo.me`).
    pub jr_base: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            id_base: "https://id.zalo.me".into(),
            wpa_base: "https://wpa.chat.zalo.me".into(),
            jr_base: "https://jr.chat.zalo.me".into(),
        }
    }
}

impl Endpoints {
    /// Every host at one base URL (a simulator serves them all).
    pub fn all_at(base: &str) -> Self {
        let base = base.trim_end_matches('/').to_string();
        Self {
            id_base: base.clone(),
            wpa_base: base.clone(),
            jr_base: base,
        }
    }
}

/// Where to log in; cheap to clone. Speaks http/ws and https/wss (rustls, the system's roots
/// plus those given to [`Client::trusting`]).
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) http: transport::HttpClient,
    pub(crate) endpoints: Endpoints,
}

impl Client {
    /// A client of `endpoints` whose requests give up after 30 s.
    pub fn new(endpoints: Endpoints) -> Self {
        Self::with_timeout(endpoints, Duration::from_secs(30))
    }

    pub fn with_timeout(endpoints: Endpoints, timeout: Duration) -> Self {
        let trim = |url: &str| url.trim_end_matches('/').to_string();
        Self {
            http: transport::HttpClient::new(timeout, Vec::new()),
            endpoints: Endpoints {
                id_base: trim(&endpoints.id_base),
                wpa_base: trim(&endpoints.wpa_base),
                jr_base: trim(&endpoints.jr_base),
            },
        }
    }

    /// Also trusts the PEM certificates in `pem` for https and wss (a private CA, or a
    /// simulator's test certificate); the system's roots stay trusted.
    pub fn trusting(self, pem: &[u8]) -> Result<Self, ClientError> {
        let roots = transport::parse_roots(pem)?;
        Ok(Self {
            http: transport::HttpClient::new(self.http.timeout(), roots),
            endpoints: self.endpoints,
        })
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }
}

/// The headers every call as the web client carries.
pub(crate) fn browser_headers<'a>(cookie: &'a str, user_agent: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-US,en;q=0.9"),
        ("content-type", "application/x-www-form-urlencoded"),
        ("cookie", cookie),
        ("origin", ORIGIN),
        ("referer", REFERER),
        ("user-agent", user_agent),
    ]
}

/// `base` with `params` and the web client's `zpw_ver`/`zpw_type` appended.
pub(crate) fn versioned_url(base: &str, params: &[(&str, &str)]) -> String {
    let version = API_VERSION.to_string();
    let kind = API_TYPE.to_string();
    let mut pairs: Vec<(&str, &str)> = params.to_vec();
    pairs.push(("zpw_ver", &version));
    pairs.push(("zpw_type", &kind));
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}{}", transport::encode_pairs(pairs))
}

/// A fresh `clientId` for a send: the web client's clock in ms, made unique and growing
/// within the process (two sends in one millisecond must not share one). Choose it before a
/// `*_with_id` send to recognise the message when the socket echoes it (as `cliMsgId`)
/// before the call returns its msgId.
pub fn new_client_id() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_ms();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(current) => last = current,
        }
    }
}

/// Milliseconds since the epoch, as the protocol's timestamps are.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_grow() {
        let first = new_client_id();
        let second = new_client_id();
        assert!(second > first);
    }

    #[test]
    fn set_cookie_replaces_and_removes() {
        let mut jar = Vec::new();
        apply_set_cookies(
            &mut jar,
            &[
                "zpsid=a; Domain=.zalo.me; Path=/; HttpOnly".into(),
                "zpw_sek=b; Domain=chat.zalo.me".into(),
            ],
        );
        apply_set_cookies(&mut jar, &["zpsid=c; Domain=.zalo.me".into()]);
        assert_eq!(cookie_header(&jar), "zpw_sek=b; zpsid=c");
        apply_set_cookies(
            &mut jar,
            &["zpw_sek=; Domain=chat.zalo.me; Max-Age=0".into()],
        );
        assert_eq!(cookie_header(&jar), "zpsid=c");
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let credentials = Credentials {
            imei: "imei-secret".into(),
            cookies: vec![Cookie {
                name: "zpw_sek".into(),
                value: "cookie-secret".into(),
                domain: String::new(),
            }],
            user_agent: "ua".into(),
            language: "vi".into(),
        };
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
