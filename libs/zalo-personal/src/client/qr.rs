//! QR login on id.zalo.me: the login page gives a script version; the QR is generated, then
//! two long polls wait for the phone to scan it and to confirm; `checksession` sets the
//! account's cookies and `jr/userinfo` proves they work.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    Client, ClientError, Cookie, Credentials, DEFAULT_USER_AGENT, apply_set_cookies, cookie_header,
    login::code_of, login::message_of, transport::encode_pairs,
};
use crate::crypto;

/// What a QR login goes through, in order; the last event is `Confirmed`, `Declined`,
/// `Expired` or `Failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QrEvent {
    /// Show this PNG (base64, without a `data:` prefix) to the user.
    QrReady {
        image_png_base64: String,
        code: String,
    },
    /// The phone scanned the code; the user still has to confirm.
    Scanned {
        display_name: String,
        avatar: String,
    },
    /// Logged in: keep these to log in again without a QR.
    Confirmed(Credentials),
    /// The user declined on the phone.
    Declined,
    /// Nobody scanned and confirmed in time; start again for a new code.
    Expired,
    /// The flow broke (network, an unexpected answer); start again.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct QrConfig {
    /// The user agent the resulting cookies are bound to: use the same one afterwards.
    pub user_agent: String,
    pub language: String,
    /// A code is good for about 100 s.
    pub expiry: Duration,
    /// How long one long-poll request may wait for its answer.
    pub poll_timeout: Duration,
}

impl Default for QrConfig {
    fn default() -> Self {
        Self {
            user_agent: DEFAULT_USER_AGENT.into(),
            language: "vi".into(),
            expiry: Duration::from_secs(100),
            poll_timeout: Duration::from_secs(60),
        }
    }
}

const CONTINUE_PC: &str = "https://zalo.me/pc";
const CONTINUE_CHAT: &str = "https://chat.zalo.me/";

impl Client {
    /// Starts a QR login; its progress arrives on the channel. Dropping the receiver abandons
    /// the login.
    pub fn login_qr(&self, config: QrConfig) -> mpsc::Receiver<QrEvent> {
        let (events, receiver) = mpsc::channel(8);
        let client = self.clone();
        tokio::spawn(async move {
            let mut flow = QrFlow {
                client,
                config,
                cookies: Vec::new(),
                events,
            };
            let last = match flow.run().await {
                Ok(last) => last,
                Err(error) => {
                    tracing::warn!(%error, "qr login failed");
                    QrEvent::Failed(error.to_string())
                }
            };
            let _ = flow.events.send(last).await;
        });
        receiver
    }
}

struct QrFlow {
    client: Client,
    config: QrConfig,
    cookies: Vec<Cookie>,
    events: mpsc::Sender<QrEvent>,
}

/// The caller went away: stop quietly.
#[derive(Debug)]
struct Abandoned;

impl QrFlow {
    async fn run(&mut self) -> Result<QrEvent, ClientError> {
        let version = self.login_version().await?;
        self.post(
            "/account/logininfo",
            &[("continue", CONTINUE_PC), ("v", &version)],
            None,
        )
        .await?;
        self.post(
            "/account/verify-client",
            &[
                ("type", "device"),
                ("continue", CONTINUE_PC),
                ("v", &version),
            ],
            None,
        )
        .await?;
        let generated = self
            .post(
                "/account/authen/qr/generate",
                &[("continue", CONTINUE_PC), ("v", &version)],
                None,
            )
            .await?;
        let code = generated["data"]["code"]
            .as_str()
            .filter(|code| !code.is_empty())
            .ok_or_else(|| ClientError::Unexpected("QR generate answered without a code".into()))?
            .to_string();
        let image = generated["data"]["image"].as_str().unwrap_or_default();
        let image = image
            .strip_prefix("data:image/png;base64,")
            .unwrap_or(image)
            .to_string();
        if self
            .emit(QrEvent::QrReady {
                image_png_base64: image,
                code: code.clone(),
            })
            .await
            .is_err()
        {
            return Ok(QrEvent::Failed("abandoned".into()));
        }
        let waited =
            tokio::time::timeout(self.config.expiry, self.wait_for_phone(&code, &version)).await;
        match waited {
            Err(_) => Ok(QrEvent::Expired),
            Ok(Err(error)) => Err(error),
            Ok(Ok(None)) => Ok(QrEvent::Declined),
            Ok(Ok(Some(()))) => self.finish().await,
        }
    }

    async fn emit(&self, event: QrEvent) -> Result<(), Abandoned> {
        self.events.send(event).await.map_err(|_| Abandoned)
    }

    /// The version of the login page's script, which every later form carries.
    async fn login_version(&mut self) -> Result<String, ClientError> {
        let url = format!(
            "{}/account?{}",
            self.client.endpoints.id_base,
            encode_pairs([("continue", CONTINUE_CHAT)])
        );
        let response = self.get(&url).await?;
        let html = String::from_utf8_lossy(&response.body);
        script_version(&html)
            .ok_or_else(|| ClientError::Unexpected("login page without a script version".into()))
    }

    /// Waits for the scan, then the confirmation. `None`: declined.
    async fn wait_for_phone(
        &mut self,
        code: &str,
        version: &str,
    ) -> Result<Option<()>, ClientError> {
        let scanned = self
            .poll(
                "/account/authen/qr/waiting-scan",
                &[("code", code), ("continue", CONTINUE_CHAT), ("v", version)],
            )
            .await?;
        if code_of(&scanned) != 0 {
            return Err(ClientError::from_code(
                code_of(&scanned),
                &message_of(&scanned),
            ));
        }
        let text = |name: &str| {
            scanned["data"][name]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        if self
            .emit(QrEvent::Scanned {
                display_name: text("display_name"),
                avatar: text("avatar"),
            })
            .await
            .is_err()
        {
            return Err(ClientError::Unexpected("abandoned".into()));
        }
        let confirmed = self
            .poll(
                "/account/authen/qr/waiting-confirm",
                &[
                    ("code", code),
                    ("gToken", ""),
                    ("gAction", "CONFIRM_QR"),
                    ("continue", CONTINUE_CHAT),
                    ("v", version),
                ],
            )
            .await?;
        match code_of(&confirmed) {
            0 => Ok(Some(())),
            -13 => Ok(None),
            other => Err(ClientError::from_code(other, &message_of(&confirmed))),
        }
    }

    /// A long poll: error_code 8 means "nothing yet, ask again".
    async fn poll(&mut self, path: &str, form: &[(&str, &str)]) -> Result<Value, ClientError> {
        loop {
            let answer = self
                .post(path, form, Some(self.config.poll_timeout))
                .await?;
            if code_of(&answer) != 8 {
                return Ok(answer);
            }
        }
    }

    /// `checksession` sets the account's cookies; `jr/userinfo` must then say logged in.
    async fn finish(&mut self) -> Result<QrEvent, ClientError> {
        let url = format!(
            "{}/account/checksession?{}",
            self.client.endpoints.id_base,
            encode_pairs([("continue", "https://chat.zalo.me/index.html")])
        );
        let checked = self.get(&url).await?;
        if checked.status >= 400 {
            return Err(ClientError::Unexpected(format!(
                "checksession answered HTTP {}",
                checked.status
            )));
        }
        let url = format!("{}/jr/userinfo", self.client.endpoints.jr_base);
        let info = self.get(&url).await?.json()?;
        if info["data"]["logged"].as_bool() != Some(true) {
            return Err(ClientError::NeedsLogin {
                code: code_of(&info),
                message: "userinfo says not logged in after the QR login".into(),
            });
        }
        let uuid = uuid::Uuid::new_v4().to_string();
        Ok(QrEvent::Confirmed(Credentials {
            imei: crypto::imei(&uuid, &self.config.user_agent),
            cookies: self.cookies.clone(),
            user_agent: self.config.user_agent.clone(),
            language: self.config.language.clone(),
        }))
    }

    async fn get(&mut self, url: &str) -> Result<super::transport::HttpResponse, ClientError> {
        let cookie = cookie_header(&self.cookies);
        let headers = headers(&cookie, &self.config.user_agent);
        let response = self
            .client
            .http
            .request(http::Method::GET, url, &headers, Vec::new(), None)
            .await?;
        apply_set_cookies(&mut self.cookies, &response.set_cookies);
        Ok(response)
    }

    async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.client.endpoints.id_base);
        let cookie = cookie_header(&self.cookies);
        let headers = headers(&cookie, &self.config.user_agent);
        let body = encode_pairs(form.iter().copied());
        let response = self
            .client
            .http
            .request(
                http::Method::POST,
                &url,
                &headers,
                body.into_bytes(),
                timeout,
            )
            .await?;
        apply_set_cookies(&mut self.cookies, &response.set_cookies);
        response.json()
    }
}

fn headers<'a>(cookie: &'a str, user_agent: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("accept", "*/*"),
        ("content-type", "application/x-www-form-urlencoded"),
        ("cookie", cookie),
        (
            "referer",
            "https://id.zalo.me/account?continue=https%3A%2F%2Fchat.zalo.me%2F",
        ),
        ("user-agent", user_agent),
    ]
}

/// The `N.N.N` of the login script `…/main-N.N.N.js` named in the page.
fn script_version(html: &str) -> Option<String> {
    let start = html.find("stc-zlogin.zdn.vn/main-")? + "stc-zlogin.zdn.vn/main-".len();
    let rest = &html[start..];
    let version: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let version = version.trim_end_matches('.');
    (!version.is_empty() && rest[version.len()..].starts_with(".js")).then(|| version.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_version_is_read_from_the_page() {
        let page = r#"<script src="https://stc-zlogin.zdn.vn/main-2.44.10.js"></script>"#;
        assert_eq!(script_version(page).as_deref(), Some("2.44.10"));
        assert_eq!(script_version("<html></html>"), None);
        assert_eq!(script_version("stc-zlogin.zdn.vn/main-.js"), None);
    }
}
