//! Zalo OA Open API calls: OAuth v4 token grants and sending messages (v3).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::http::{HttpClient, HttpError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZaloOaConfig {
    /// OAuth host (`https://oauth.zaloapp.com` in production; the simulator in tests).
    pub oauth_base_url: String,
    /// Open API host (`https://openapi.zalo.me`).
    pub api_base_url: String,
    /// The giao Zalo app used by BeginOaConnect.
    pub app_id: String,
    pub app_secret: String,
    pub oa_secret_key: String,
    /// Refresh the access token this long before it expires.
    pub refresh_before_secs: i64,
    /// Outbound pacing per account when the account sets none.
    pub default_send_rate_per_minute: u32,
    pub request_timeout_ms: u64,
    /// Zalo's rate-limit window: after `X-RateLimit-Remain: 0` or a -32 answer, the app's
    /// sends wait this long.
    pub rate_limit_pause_ms: u64,
    /// A webhook waits at most this long for a new customer's profile (Zalo wants its answer
    /// within 2 s); without it the message is published with the id alone.
    pub profile_timeout_ms: u64,
    /// A PEM file of root certificates trusted besides the system's for https (a private CA
    /// in front of the API, or a simulator's certificate). Empty: the system's roots only.
    pub extra_root_certs_pem: String,
}

impl ZaloOaConfig {
    /// The extra roots, read and parsed (an unreadable file is a configuration error).
    pub fn extra_roots(
        &self,
    ) -> Result<Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>, String> {
        if self.extra_root_certs_pem.trim().is_empty() {
            return Ok(Vec::new());
        }
        let pem = std::fs::read(&self.extra_root_certs_pem).map_err(|error| {
            format!(
                "cannot read zalo_oa.extra_root_certs_pem {}: {error}",
                self.extra_root_certs_pem
            )
        })?;
        super::http::parse_roots(&pem)
            .map_err(|error| format!("zalo_oa.extra_root_certs_pem: {error}"))
    }
}

impl Default for ZaloOaConfig {
    fn default() -> Self {
        Self {
            oauth_base_url: "https://oauth.zaloapp.com".into(),
            api_base_url: "https://openapi.zalo.me".into(),
            app_id: String::new(),
            app_secret: String::new(),
            oa_secret_key: String::new(),
            refresh_before_secs: 3_600,
            default_send_rate_per_minute: 60,
            request_timeout_ms: 10_000,
            rate_limit_pause_ms: 60_000,
            profile_timeout_ms: 800,
            extra_root_certs_pem: String::new(),
        }
    }
}

/// A token grant's answer.
#[derive(Clone)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Http(#[from] HttpError),
    /// Zalo answered with a non-zero `error`.
    #[error("Zalo error {code}: {message}")]
    Zalo { code: i64, message: String },
    #[error("unexpected answer (HTTP {status})")]
    Unexpected { status: u16 },
}

#[derive(Debug, Clone)]
pub struct OaClient {
    http: HttpClient,
    oauth_base: String,
    api_base: String,
}

fn number(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_str().and_then(|text| text.parse().ok()))
}

fn zalo_error(status: u16, body: &Value) -> CallError {
    match number(&body["error"]) {
        Some(code) if code != 0 => CallError::Zalo {
            code,
            message: body["message"].as_str().unwrap_or_default().to_string(),
        },
        _ => CallError::Unexpected { status },
    }
}

impl OaClient {
    pub fn new(config: &ZaloOaConfig) -> Self {
        // Checked by the service's config validation; a bad file here leaves the system roots.
        let roots = config.extra_roots().unwrap_or_else(|error| {
            tracing::error!(%error, "extra root certificates ignored");
            Vec::new()
        });
        Self {
            http: HttpClient::with_roots(
                std::time::Duration::from_millis(config.request_timeout_ms),
                roots,
            ),
            oauth_base: config.oauth_base_url.trim_end_matches('/').to_string(),
            api_base: config.api_base_url.trim_end_matches('/').to_string(),
        }
    }

    pub fn authorize_url(
        &self,
        app_id: &str,
        redirect_uri: &str,
        state: &str,
        code_challenge: &str,
    ) -> String {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("app_id", app_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state)
            .append_pair("code_challenge", code_challenge)
            .finish();
        format!("{}/v4/oa/permission?{query}", self.oauth_base)
    }

    async fn grant(&self, app_secret: &str, form: &[(&str, &str)]) -> Result<Tokens, CallError> {
        // Encoded before any await: the serializer is not Send.
        let body = {
            let mut body = form_urlencoded::Serializer::new(String::new());
            for (name, value) in form {
                body.append_pair(name, value);
            }
            body.finish()
        };
        let response = self
            .http
            .request(
                http::Method::POST,
                &format!("{}/v4/oa/access_token", self.oauth_base),
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("secret_key", app_secret),
                ],
                body.into_bytes(),
            )
            .await?;
        let json: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        match (
            json["access_token"].as_str(),
            json["refresh_token"].as_str(),
        ) {
            (Some(access), Some(refresh)) if !access.is_empty() => Ok(Tokens {
                access_token: access.to_string(),
                refresh_token: refresh.to_string(),
                // A string in Zalo's answers; a number is accepted too.
                expires_in: number(&json["expires_in"]).unwrap_or(90_000),
            }),
            _ => Err(zalo_error(response.status, &json)),
        }
    }

    pub async fn exchange_code(
        &self,
        app_id: &str,
        app_secret: &str,
        code: &str,
        code_verifier: &str,
    ) -> Result<Tokens, CallError> {
        self.grant(
            app_secret,
            &[
                ("code", code),
                ("app_id", app_id),
                ("grant_type", "authorization_code"),
                ("code_verifier", code_verifier),
            ],
        )
        .await
    }

    pub async fn refresh(
        &self,
        app_id: &str,
        app_secret: &str,
        refresh_token: &str,
    ) -> Result<Tokens, CallError> {
        self.grant(
            app_secret,
            &[
                ("refresh_token", refresh_token),
                ("app_id", app_id),
                ("grant_type", "refresh_token"),
            ],
        )
        .await
    }

    /// Sends a consultation (cs) message; returns Zalo's message id.
    pub async fn send_cs(
        &self,
        access_token: &str,
        user_id: &str,
        message: Value,
    ) -> Result<Answer<String>, CallError> {
        let body = json!({"recipient": {"user_id": user_id}, "message": message});
        let response = self
            .http
            .request(
                http::Method::POST,
                &format!("{}/v3.0/oa/message/cs", self.api_base),
                &[
                    ("content-type", "application/json"),
                    ("access_token", access_token),
                ],
                body.to_string().into_bytes(),
            )
            .await?;
        let rate = RateLimit::from_headers(&response.headers);
        let json: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        match (number(&json["error"]), json["data"]["message_id"].as_str()) {
            (Some(0), Some(id)) if response.status == 200 => Ok(Answer {
                value: id.to_string(),
                rate,
            }),
            _ => Err(zalo_error(response.status, &json)),
        }
    }

    /// Uploads an image (JPG/PNG ≤ 1 MB → `attachment_id`) or a file (PDF/DOC/DOCX ≤ 5 MB →
    /// `token`) for a following send. Uploading again is harmless: nothing reaches a user.
    pub async fn upload(
        &self,
        access_token: &str,
        kind: UploadKind,
        name: &str,
        mime_type: &str,
        data: &[u8],
    ) -> Result<Answer<String>, CallError> {
        let boundary = format!("giao-{}", hex::encode(rand::random::<[u8; 12]>()));
        let body = multipart(&boundary, name, mime_type, data);
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let response = self
            .http
            .request(
                http::Method::POST,
                &format!("{}/v2.0/oa/upload/{}", self.api_base, kind.path()),
                &[
                    ("content-type", content_type.as_str()),
                    ("access_token", access_token),
                ],
                body,
            )
            .await?;
        let rate = RateLimit::from_headers(&response.headers);
        let json: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        let id = json["data"][kind.id_field()].as_str().unwrap_or_default();
        match number(&json["error"]) {
            Some(0) if response.status == 200 && !id.is_empty() => Ok(Answer {
                value: id.to_string(),
                rate,
            }),
            _ => Err(zalo_error(response.status, &json)),
        }
    }

    /// A follower's profile (`/v3.0/oa/user/detail`).
    pub async fn user_detail(
        &self,
        access_token: &str,
        user_id: &str,
    ) -> Result<Answer<UserProfile>, CallError> {
        let data = json!({"user_id": user_id}).to_string();
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("data", &data)
            .finish();
        let response = self
            .http
            .request(
                http::Method::GET,
                &format!("{}/v3.0/oa/user/detail?{query}", self.api_base),
                &[("access_token", access_token)],
                Vec::new(),
            )
            .await?;
        let rate = RateLimit::from_headers(&response.headers);
        let json: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if number(&json["error"]) != Some(0) || response.status != 200 {
            return Err(zalo_error(response.status, &json));
        }
        let data = &json["data"];
        // `avatar` in the documented answer; some answers only carry `avatars` by size.
        let avatar = data["avatar"]
            .as_str()
            .or_else(|| data["avatars"]["240"].as_str())
            .or_else(|| data["avatars"]["120"].as_str())
            .unwrap_or_default();
        Ok(Answer {
            value: UserProfile {
                user_id: data["user_id"].as_str().unwrap_or(user_id).to_string(),
                display_name: data["display_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                avatar_url: avatar.to_string(),
                is_follower: data["user_is_follower"].as_bool().unwrap_or(false),
            },
            rate,
        })
    }
}

/// What to upload to: images and files have their own endpoints and answer different ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    Image,
    File,
}

impl UploadKind {
    fn path(self) -> &'static str {
        match self {
            UploadKind::Image => "image",
            UploadKind::File => "file",
        }
    }

    fn id_field(self) -> &'static str {
        match self {
            UploadKind::Image => "attachment_id",
            UploadKind::File => "token",
        }
    }
}

/// A successful answer and the rate-limit headers that came with it.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub value: T,
    pub rate: Option<RateLimit>,
}

/// `X-RateLimit-Limit` / `X-RateLimit-Remain`: requests per minute for the app, and what is
/// left of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub remain: u32,
}

impl RateLimit {
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        let read = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u32>().ok())
        };
        Some(Self {
            limit: read("x-ratelimit-limit")?,
            // "Remain" is what Zalo sends; "Remaining" is the common spelling elsewhere.
            remain: read("x-ratelimit-remain").or_else(|| read("x-ratelimit-remaining"))?,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserProfile {
    pub user_id: String,
    pub display_name: String,
    pub avatar_url: String,
    pub is_follower: bool,
}

/// A `multipart/form-data` body with one part, `file`.
fn multipart(boundary: &str, name: &str, mime_type: &str, data: &[u8]) -> Vec<u8> {
    // A quote or line break in a file name would end the header early.
    let name: String = name
        .chars()
        .map(|c| {
            if matches!(c, '"' | '\r' | '\n' | '\\') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let mime_type = if mime_type.is_empty() {
        "application/octet-stream"
    } else {
        mime_type
    };
    let mut body = Vec::with_capacity(data.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             content-type: {mime_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}
