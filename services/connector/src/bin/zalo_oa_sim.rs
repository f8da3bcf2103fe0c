//! `giao-zalo-oa-sim [LISTEN]`: a Zalo OA Open API simulator on LISTEN (default
//! 127.0.0.1:7190) for local runs. App and OA settings from `GIAO_SIM_APP_ID`,
//! `GIAO_SIM_APP_SECRET`, `GIAO_SIM_OA_ID`, `GIAO_SIM_OA_SECRET_KEY`. With
//! `GIAO_SIM_TLS_CERT` and `GIAO_SIM_TLS_KEY` (PEM files) it serves https, as Zalo does.

use giao_connector::zalo::sim::{OaSimulator, SimConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7190".into())
        .parse()?;
    let defaults = SimConfig::default();
    let var = |name: &str, default: String| std::env::var(name).unwrap_or(default);
    let config = SimConfig {
        app_id: var("GIAO_SIM_APP_ID", defaults.app_id),
        app_secret: var("GIAO_SIM_APP_SECRET", defaults.app_secret),
        oa_id: var("GIAO_SIM_OA_ID", defaults.oa_id),
        oa_secret_key: var("GIAO_SIM_OA_SECRET_KEY", defaults.oa_secret_key),
        access_ttl_secs: defaults.access_ttl_secs,
    };
    let stop = CancellationToken::new();
    let sim = match (
        std::env::var("GIAO_SIM_TLS_CERT"),
        std::env::var("GIAO_SIM_TLS_KEY"),
    ) {
        (Ok(cert), Ok(key)) => {
            OaSimulator::start_tls(
                config,
                listen,
                stop.clone(),
                &std::fs::read(cert)?,
                &std::fs::read(key)?,
            )
            .await?
        }
        _ => OaSimulator::start(config, listen, stop.clone()).await?,
    };
    println!("Zalo OA simulator on {}", sim.base_url());
    tokio::signal::ctrl_c().await?;
    stop.cancel();
    Ok(())
}
