//! Layered configuration: compiled-in defaults, then an optional TOML file, then environment
//! variables prefixed `GIAO_` with `__` between nested keys (`GIAO_DATABASE__URL`,
//! `GIAO_GRPC__LISTEN`). Helm values map onto the same keys. Every service validates the
//! result before it starts, so a bad value stops the process with a message naming the key.

use std::{net::SocketAddr, path::Path};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Prefix of every environment variable giao reads.
pub const ENV_PREFIX: &str = "GIAO_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} not found")]
    MissingFile { path: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Loads `T` from defaults, the file (when given) and the environment, then validates it.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default + Validate,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::MissingFile {
                path: path.display().to_string(),
            });
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    let config: T = figment
        .extract()
        .map_err(|error| ConfigError::Invalid(error.to_string()))?;
    config.validate().map_err(ConfigError::Invalid)?;
    Ok(config)
}

/// Checks that go beyond what serde can express; the message names the key.
pub trait Validate {
    fn validate(&self) -> Result<(), String>;
}

/// The gRPC listener and the limits of the shared tower stack.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    pub listen: SocketAddr,
    /// Upper bound on any request; a shorter `grpc-timeout` from the caller wins.
    pub request_timeout_secs: u64,
    /// Requests served at once by this process; beyond it requests are shed with Unavailable.
    pub concurrency_limit: usize,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
}

impl GrpcConfig {
    pub fn with_listen(listen: SocketAddr) -> Self {
        Self {
            listen,
            ..Self::default()
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            request_timeout_secs: 30,
            concurrency_limit: 1024,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Validate for GrpcConfig {
    fn validate(&self) -> Result<(), String> {
        if self.request_timeout_secs == 0 {
            return Err("grpc.request_timeout_secs must be at least 1".into());
        }
        if self.concurrency_limit == 0 {
            return Err("grpc.concurrency_limit must be at least 1".into());
        }
        if self.max_message_bytes < 1024 {
            return Err("grpc.max_message_bytes must be at least 1024".into());
        }
        Ok(())
    }
}

/// The Prometheus endpoint; `listen = None` turns it off.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Sample {
        grpc: GrpcConfig,
        name: String,
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), String> {
            self.grpc.validate()
        }
    }

    #[test]
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "giao.toml",
                "name = \"from-file\"\n[grpc]\nlisten = \"0.0.0.0:7000\"\nrequest_timeout_secs = 5\n",
            )?;
            jail.set_env("GIAO_GRPC__REQUEST_TIMEOUT_SECS", "9");
            let sample: Sample = load(Some(Path::new("giao.toml"))).expect("loads");
            assert_eq!(sample.name, "from-file");
            assert_eq!(sample.grpc.listen, "0.0.0.0:7000".parse().expect("addr"));
            assert_eq!(sample.grpc.request_timeout_secs, 9);
            assert_eq!(sample.grpc.concurrency_limit, 1024);
            Ok(())
        });
    }

    #[test]
    fn invalid_values_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GIAO_GRPC__REQUEST_TIMEOUT_SECS", "0");
            let error = load::<Sample>(None).expect_err("must fail");
            assert!(
                error.to_string().contains("grpc.request_timeout_secs"),
                "{error}"
            );
            jail.set_env("GIAO_GRPC__LISTEN", "not-an-address");
            let error = load::<Sample>(None).expect_err("must fail");
            assert!(
                error.to_string().to_lowercase().contains("grpc.listen"),
                "{error}"
            );
            Ok(())
        });
    }
}
