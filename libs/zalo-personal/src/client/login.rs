//! Cookie login: `getLoginInfo` (signed, with parameters encrypted under a key derived from a
//! fresh zcid) gives the uid, the session key and the service hosts; `getServerInfo` gives the
//! socket settings.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use serde_json::{Value, json};

use super::{
    API_TYPE, API_VERSION, Client, ClientError, Credentials, browser_headers, now_ms,
    transport::encode_pairs, versioned_url,
};
use crate::crypto;

/// The service hosts `zpw_service_map_v3` lists; the first of each is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceMap {
    pub chat: Vec<String>,
    pub group: Vec<String>,
    pub file: Vec<String>,
    pub profile: Vec<String>,
    /// Every list the server sent, by name (for calls this client does not wrap).
    pub all: HashMap<String, Vec<String>>,
}

impl ServiceMap {
    fn from_json(map: &Value) -> Self {
        let all: HashMap<String, Vec<String>> = map
            .as_object()
            .map(|object| {
                object
                    .iter()
                    .map(|(name, hosts)| (name.clone(), strings(hosts)))
                    .collect()
            })
            .unwrap_or_default();
        let list = |name: &str| all.get(name).cloned().unwrap_or_default();
        Self {
            chat: list("chat"),
            group: list("group"),
            file: list("file"),
            profile: list("profile"),
            all,
        }
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    item.as_str()
                        .map(|host| host.trim_end_matches('/').to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The websocket's settings from `getServerInfo` (`setttings.features.socket`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSettings {
    pub ping_interval: Duration,
    /// Close codes after which the web client reconnects.
    pub close_and_retry_codes: Vec<u16>,
    /// Per close code: the delays between attempts and the most attempts in a row.
    pub retries: HashMap<u16, RetryPolicy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub delays: Vec<Duration>,
    pub max: u32,
}

impl Default for SocketSettings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(60),
            close_and_retry_codes: vec![1000, 1006],
            retries: HashMap::new(),
        }
    }
}

impl SocketSettings {
    /// Reads the settings object; missing or odd fields keep the defaults.
    pub fn from_json(server_info: &Value) -> Self {
        // Zalo spells the key with three t's; accept the correct spelling too.
        let settings = if server_info["setttings"].is_object() {
            &server_info["setttings"]
        } else {
            &server_info["settings"]
        };
        let socket = &settings["features"]["socket"];
        let mut out = Self::default();
        if let Some(ms) = socket["ping_interval"].as_u64().filter(|ms| *ms > 0) {
            out.ping_interval = Duration::from_millis(ms);
        }
        if let Some(codes) = socket["close_and_retry_codes"].as_array() {
            out.close_and_retry_codes = codes
                .iter()
                .filter_map(|code| code.as_u64().and_then(|code| u16::try_from(code).ok()))
                .collect();
        }
        if let Some(retries) = socket["retries"].as_object() {
            for (code, policy) in retries {
                let Ok(code) = code.parse::<u16>() else {
                    continue;
                };
                // `times` is a number or a list of milliseconds.
                let delays = match &policy["times"] {
                    Value::Array(items) => items.iter().filter_map(Value::as_u64).collect(),
                    other => other.as_u64().into_iter().collect::<Vec<_>>(),
                }
                .into_iter()
                .map(Duration::from_millis)
                .collect();
                let max = policy["max"]
                    .as_u64()
                    .and_then(|max| u32::try_from(max).ok())
                    .unwrap_or(0);
                out.retries.insert(code, RetryPolicy { delays, max });
            }
        }
        out
    }
}

/// A logged-in account. Cheap to share behind an `Arc`; every call uses the session key.
#[derive(Clone)]
pub struct Session {
    pub(crate) client: Client,
    pub(crate) credentials: Credentials,
    pub(crate) cipher: Arc<crypto::SessionCipher>,
    pub uid: String,
    pub services: ServiceMap,
    pub ws_urls: Vec<String>,
    pub socket: SocketSettings,
    pub(crate) share_file: super::ShareFileSettings,
    /// File uploads waiting for the websocket's "file_done": shared with the listeners.
    pub(crate) uploads: Arc<super::media::Uploads>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("uid", &self.uid)
            .field("services", &self.services)
            .field("ws_urls", &self.ws_urls)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }
}

/// Random lowercase hex of 6 to 12 characters, as the web client's `zcid_ext`.
fn zcid_ext() -> String {
    let bytes = uuid::Uuid::new_v4();
    let hex: String = bytes
        .as_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let length = 6 + usize::from(bytes.as_bytes()[0] % 7);
    hex[..length].to_string()
}

impl Client {
    /// Logs in with saved credentials. `NeedsLogin` when the cookies no longer work.
    pub async fn login(&self, credentials: &Credentials) -> Result<Session, ClientError> {
        let login = self.login_info(credentials).await?;
        let server_info = self.server_info(credentials).await?;
        let socket = SocketSettings::from_json(&server_info);
        let share_file = super::ShareFileSettings::from_json(&server_info);
        let uid = match &login["uid"] {
            Value::String(uid) => uid.clone(),
            Value::Number(uid) => uid.to_string(),
            _ => return Err(ClientError::Unexpected("login info without uid".into())),
        };
        let enk = login["zpw_enk"]
            .as_str()
            .ok_or_else(|| ClientError::Unexpected("login info without zpw_enk".into()))?;
        let cipher = crypto::SessionCipher::from_enk(enk)?;
        let services = ServiceMap::from_json(&login["zpw_service_map_v3"]);
        if services.chat.is_empty() || services.group.is_empty() {
            return Err(ClientError::Unexpected(
                "login info without chat or group hosts".into(),
            ));
        }
        tracing::info!(uid = %uid, "logged in with cookies");
        Ok(Session {
            client: self.clone(),
            credentials: credentials.clone(),
            cipher: Arc::new(cipher),
            uid,
            services,
            ws_urls: strings(&login["zpw_ws"]),
            socket,
            share_file,
            uploads: Arc::default(),
        })
    }

    async fn login_info(&self, credentials: &Credentials) -> Result<Value, ClientError> {
        let ts = now_ms();
        let zcid = crypto::zcid(API_TYPE, &credentials.imei, ts)?;
        let zcid_ext = zcid_ext();
        let key = crypto::login_key(&zcid, &zcid_ext)?;
        let data = json!({
            "computer_name": "Web",
            "imei": credentials.imei,
            "language": credentials.language,
            "ts": ts,
        });
        let encrypted = crypto::encrypt_login_params(&key, &data.to_string())?;
        let mut params = BTreeMap::from([
            ("zcid".to_string(), zcid),
            ("zcid_ext".to_string(), zcid_ext),
            ("enc_ver".to_string(), "v2".to_string()),
            ("params".to_string(), encrypted),
            ("type".to_string(), API_TYPE.to_string()),
            ("client_version".to_string(), API_VERSION.to_string()),
        ]);
        let signkey = crypto::sign_key("getlogininfo", &params);
        params.insert("signkey".into(), signkey);
        params.insert("nretry".into(), "0".into());
        let pairs: Vec<(&str, &str)> = params
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let url = versioned_url(
            &format!("{}/api/login/getLoginInfo", self.endpoints.wpa_base),
            &pairs,
        );
        let cookie = credentials.cookie_header();
        let response = self
            .http
            .request(
                http::Method::GET,
                &url,
                &browser_headers(&cookie, &credentials.user_agent),
                Vec::new(),
                None,
            )
            .await?;
        let body = response.json()?;
        let outer = code_of(&body);
        if outer != 0 {
            return Err(needs_login(outer, &body));
        }
        let data = body["data"]
            .as_str()
            .ok_or_else(|| ClientError::NeedsLogin {
                code: 0,
                message: "login info answered without data".into(),
            })?;
        let decrypted = crypto::decrypt_login_data(&key, data)?;
        let inner: Value = serde_json::from_str(&decrypted)
            .map_err(|error| ClientError::Unexpected(format!("login info: {error}")))?;
        let code = code_of(&inner);
        if code != 0 {
            return Err(needs_login(code, &inner));
        }
        if !inner["data"].is_object() {
            return Err(ClientError::NeedsLogin {
                code: 0,
                message: "login info without data".into(),
            });
        }
        Ok(inner["data"].clone())
    }

    /// `getServerInfo`'s `data`: the socket and upload settings.
    async fn server_info(&self, credentials: &Credentials) -> Result<Value, ClientError> {
        let kind = API_TYPE.to_string();
        let version = API_VERSION.to_string();
        let params = BTreeMap::from([
            ("imei".to_string(), credentials.imei.clone()),
            ("type".to_string(), kind.clone()),
            ("client_version".to_string(), version.clone()),
            ("computer_name".to_string(), "Web".to_string()),
        ]);
        let signkey = crypto::sign_key("getserverinfo", &params);
        // Unlike the other calls, this one carries no zpw_ver/zpw_type.
        let query = encode_pairs([
            ("imei", credentials.imei.as_str()),
            ("type", kind.as_str()),
            ("client_version", version.as_str()),
            ("computer_name", "Web"),
            ("signkey", signkey.as_str()),
        ]);
        let url = format!(
            "{}/api/login/getServerInfo?{query}",
            self.endpoints.wpa_base
        );
        let cookie = credentials.cookie_header();
        let response = self
            .http
            .request(
                http::Method::GET,
                &url,
                &browser_headers(&cookie, &credentials.user_agent),
                Vec::new(),
                None,
            )
            .await?;
        let body = response.json()?;
        let code = code_of(&body);
        if code != 0 || !body["data"].is_object() {
            return Err(needs_login(code, &body));
        }
        Ok(body["data"].clone())
    }
}

/// `error_code` as a number (some answers send it as a string); absent is 0.
pub(crate) fn code_of(body: &Value) -> i64 {
    match &body["error_code"] {
        Value::Number(code) => code.as_i64().unwrap_or(-1),
        Value::String(code) => code.parse().unwrap_or(-1),
        _ => 0,
    }
}

pub(crate) fn message_of(body: &Value) -> String {
    body["error_message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A failed login is a login the user must redo, whatever the code; rate limits excepted.
fn needs_login(code: i64, body: &Value) -> ClientError {
    match ClientError::from_code(code, &message_of(body)) {
        limit @ (ClientError::RetryLimit | ClientError::RequestLimit) => limit,
        _ => ClientError::NeedsLogin {
            code,
            message: message_of(body),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_settings_read_the_misspelled_key_and_both_retry_shapes() {
        let info = json!({"setttings": {"features": {"socket": {
            "ping_interval": 20000,
            "close_and_retry_codes": [1000, 1006, 3000],
            "retries": {"1006": {"max": 5, "times": [1000, 2000]}, "1000": {"times": 500}},
        }}}});
        let settings = SocketSettings::from_json(&info);
        assert_eq!(settings.ping_interval, Duration::from_secs(20));
        assert_eq!(settings.close_and_retry_codes, vec![1000, 1006, 3000]);
        assert_eq!(settings.retries[&1006].max, 5);
        assert_eq!(settings.retries[&1006].delays.len(), 2);
        assert_eq!(
            settings.retries[&1000].delays,
            vec![Duration::from_millis(500)]
        );
        let correct = json!({"settings": {"features": {"socket": {"ping_interval": 1000}}}});
        assert_eq!(
            SocketSettings::from_json(&correct).ping_interval,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn zcid_ext_is_short_hex() {
        for _ in 0..50 {
            let ext = zcid_ext();
            assert!((6..=12).contains(&ext.len()), "{ext}");
            assert!(ext.chars().all(|c| c.is_ascii_hexdigit()));
        }
    }
}
