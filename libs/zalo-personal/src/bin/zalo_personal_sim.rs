//! `zalo-personal-sim [LISTEN]`: the personal-account simulator on LISTEN (default
//! 127.0.0.1:0) for local runs, with one account (`GIAO_SIM_UID`, default 100000001, named
//! `GIAO_SIM_NAME`). With `GIAO_SIM_TLS_CERT` and `GIAO_SIM_TLS_KEY` (PEM files, issued for
//! localhost) it serves https and wss. Prints the base URL to point `Endpoints::all_at` at;
//! the `/sim/*` routes script it (see docs/zalo-personal.md).

use zalo_personal::sim::{SimAccount, SimConfig, Simulator};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    let uid = std::env::var("GIAO_SIM_UID").unwrap_or_else(|_| "100000001".into());
    let name = std::env::var("GIAO_SIM_NAME").unwrap_or_else(|_| "Shop Owner".into());
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let sim = match (
        std::env::var("GIAO_SIM_TLS_CERT"),
        std::env::var("GIAO_SIM_TLS_KEY"),
    ) {
        (Ok(cert), Ok(key)) => {
            Simulator::start_tls(
                SimConfig::default(),
                listen,
                stop,
                &std::fs::read(cert)?,
                &std::fs::read(key)?,
            )
            .await?
        }
        _ => Simulator::start(SimConfig::default(), listen, stop).await?,
    };
    sim.add_account(SimAccount::new(&uid, &name));
    println!(
        "Zalo personal simulator on {} (account {uid})",
        sim.base_url()
    );
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}
