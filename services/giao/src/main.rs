//! `giao`: run one service (`giao serve message-store`) or the whole suite in one process on
//! a laptop (`giao dev`). In dev mode the five services still talk to each other through
//! gRPC on loopback and through the (embedded) bus, so the same code paths run as in a
//! cluster.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use giao_auth::admin::DEMO_TENANT;
use giao_platform::{
    config::MetricsConfig,
    grpc::TraceInterceptor,
    telemetry::{self, LogFormat, TelemetryConfig},
};
use giao_proto::assignment::{
    Availability, ListRoutingPoliciesRequest, RoutingPolicy, RoutingStrategy,
    SetAvailabilityRequest, SetRoutingPolicyRequest, SyncRosterRequest,
    assignment_service_client::AssignmentServiceClient,
};
use tokio_util::sync::CancellationToken;

// glibc malloc spent about a fifth of the ingest path's CPU consolidating freed buffers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "giao",
    version,
    about = "Company-owned home for every Zalo customer conversation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one service; settings from --config and GIAO_* variables.
    Serve {
        service: Service,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run all five services in this process with SQLite files under --data and the embedded
    /// bus, plus the simulator feeding demo conversations.
    Dev {
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// Do not feed demo conversations.
        #[arg(long)]
        no_demo: bool,
        /// Pause between demo messages, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        demo_interval_ms: u64,
        /// gRPC ports are this + 1..=5 (connector, message-store, assignment, reporting, auth).
        #[arg(long, default_value_t = 7100)]
        grpc_port_base: u16,
        /// Metrics ports are this + 1..=5.
        #[arg(long, default_value_t = 9100)]
        metrics_port_base: u16,
    },
    /// Administration of the auth service's database (settings as for `giao serve auth`).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a tenant and its first admin. The admin's password is generated and printed
    /// once, unless --password-stdin reads it from standard input.
    CreateTenant {
        /// Tenant id: 2 to 40 lowercase letters, digits or -.
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        /// Display name of the tenant (defaults to its id).
        #[arg(long, default_value = "")]
        name: String,
        /// Read the admin's password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Service {
    Connector,
    MessageStore,
    Assignment,
    Reporting,
    Auth,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // `service::main` reads `--config` from the arguments itself.
        Command::Serve { service, config: _ } => serve_one(service),
        Command::Dev {
            data,
            no_demo,
            demo_interval_ms,
            grpc_port_base,
            metrics_port_base,
        } => run_dev(DevOptions {
            data,
            demo: !no_demo,
            demo_interval_ms,
            grpc_port_base,
            metrics_port_base,
        }),
        Command::Admin { command, config } => admin(command, config),
    }
}

fn admin(command: AdminCommand, config_path: Option<PathBuf>) -> ExitCode {
    let config: giao_auth::Config = match giao_platform::config::load(config_path.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("giao admin: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("giao admin: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match command {
            AdminCommand::CreateTenant {
                tenant,
                email,
                name,
                password_stdin,
            } => {
                let password = if password_stdin {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    let password = line.trim_end_matches(['\r', '\n']).to_string();
                    anyhow::ensure!(!password.is_empty(), "no password on standard input");
                    Some(password)
                } else {
                    None
                };
                let generated = password.is_none();
                let created =
                    giao_auth::admin::create_tenant(&config, &tenant, &name, &email, password)
                        .await?;
                println!(
                    "created tenant {} with admin {} (user id {})",
                    created.tenant.id,
                    created.user.email.as_deref().unwrap_or_default(),
                    created.user.id
                );
                if generated {
                    println!(
                        "admin password (shown once, store it now): {}",
                        created.password
                    );
                }
                anyhow::Ok(())
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("giao admin: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve_one(service: Service) -> ExitCode {
    match service {
        Service::Connector => {
            giao_platform::service::main(giao_connector::SERVICE, giao_connector::serve)
        }
        Service::MessageStore => {
            giao_platform::service::main(giao_message_store::SERVICE, giao_message_store::serve)
        }
        Service::Assignment => {
            giao_platform::service::main(giao_assignment::SERVICE, giao_assignment::serve)
        }
        Service::Reporting => {
            giao_platform::service::main(giao_reporting::SERVICE, giao_reporting::serve)
        }
        Service::Auth => giao_platform::service::main(giao_auth::SERVICE, giao_auth::serve),
    }
}

/// Local ports of `giao dev`: by default gRPC 7101–7105, metrics 9101–9105.
fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

struct DevOptions {
    data: PathBuf,
    demo: bool,
    demo_interval_ms: u64,
    grpc_port_base: u16,
    metrics_port_base: u16,
}

fn run_dev(options: DevOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("giao dev: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let telemetry_config = TelemetryConfig {
            log_format: LogFormat::Pretty,
            log_level: "info,sqlx=warn".into(),
            otlp_endpoint: std::env::var("GIAO_TELEMETRY__OTLP_ENDPOINT").ok(),
        };
        let _guard = match telemetry::init("giao-dev", &telemetry_config) {
            Ok(guard) => guard,
            Err(error) => {
                eprintln!("giao dev: {error}");
                return ExitCode::FAILURE;
            }
        };
        match dev(options, giao_platform::shutdown::on_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("giao dev: {error:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn dev(options: DevOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let DevOptions {
        data,
        demo,
        demo_interval_ms,
        grpc_port_base: grpc,
        metrics_port_base: metrics,
    } = options;
    std::fs::create_dir_all(&data)?;
    let database = |name: &str| giao_storage::DatabaseConfig {
        url: format!("sqlite://{}/{name}.db", data.display()),
        ..Default::default()
    };
    let bus = giao_bus::BusConfig {
        kind: giao_bus::BusKind::Embedded,
        embedded_path: data.join("bus.db").display().to_string(),
        ..Default::default()
    };
    let auth = giao_authz_dev(grpc + 5);

    // Auth first: routing below is set up for the demo users it seeds.
    let auth_config = giao_auth::Config {
        grpc: giao_platform::config::GrpcConfig::with_listen(local(grpc + 5)),
        metrics: MetricsConfig {
            listen: Some(local(metrics + 5)),
        },
        database: database("auth"),
        bus: bus.clone(),
        auth: auth.clone(),
        // Laptop only: the signing keys' encryption key lives in data/auth.db.kek.
        dev_generate_key_encryption_key: true,
        ..Default::default()
    };
    let auth_service = giao_auth::bind(auth_config.clone()).await?;
    let demo_users = giao_auth::admin::seed_demo(&auth_config).await?;

    let demo_admin = demo_users
        .iter()
        .find(|user| user.role == giao_authz::Role::Admin)
        .map(|user| user.id.clone())
        .context("the demo tenant has no admin")?;
    let demo_agents: Vec<_> = demo_users
        .iter()
        .filter(|user| user.role == giao_authz::Role::Agent)
        .cloned()
        .collect();
    // Routing's credential for the demo tenant is a laptop-only developer token naming the
    // demo admin, not an API key: auth offers no way to mint a key in-process (only over its
    // gRPC API, which would leave a new secret behind on every start), and every service of
    // `giao dev` already accepts developer tokens (`auth.dev_tokens`).
    let demo_admin_token = format!("dev.{DEMO_TENANT}.{demo_admin}.admin");

    let connector = giao_connector::bind(giao_connector::Config {
        grpc: giao_platform::config::GrpcConfig::with_listen(local(grpc + 1)),
        metrics: MetricsConfig {
            listen: Some(local(metrics + 1)),
        },
        database: database("connector"),
        bus: bus.clone(),
        auth: auth.clone(),
        simulator: giao_connector::SimulatorConfig {
            demo,
            demo_tenant: DEMO_TENANT.into(),
            demo_interval_ms,
            demo_messages: 0,
        },
        ..Default::default()
    })
    .await?;
    let message_store = giao_message_store::bind(giao_message_store::Config {
        grpc: giao_platform::config::GrpcConfig::with_listen(local(grpc + 2)),
        metrics: MetricsConfig {
            listen: Some(local(metrics + 2)),
        },
        database: database("message-store"),
        bus: bus.clone(),
        auth: auth.clone(),
        ..Default::default()
    })
    .await?;
    let assignment_defaults = giao_assignment::Config::default();
    let assignment = giao_assignment::bind(giao_assignment::Config {
        grpc: giao_platform::config::GrpcConfig::with_listen(local(grpc + 3)),
        metrics: MetricsConfig {
            listen: Some(local(metrics + 3)),
        },
        database: database("assignment"),
        bus: bus.clone(),
        auth: auth.clone(),
        message_store: giao_assignment::MessageStoreLink {
            endpoint: format!("http://{}", message_store.grpc_addr()),
            ..assignment_defaults.message_store
        },
        auth_service: giao_assignment::AuthServiceLink {
            endpoint: format!("http://{}", auth_service.grpc_addr()),
        },
        routing: giao_assignment::RoutingConfig {
            tenant_api_keys: [(DEMO_TENANT.to_string(), demo_admin_token.clone())].into(),
            ..assignment_defaults.routing
        },
        ..assignment_defaults
    })
    .await?;
    let reporting = giao_reporting::bind(giao_reporting::Config {
        grpc: giao_platform::config::GrpcConfig::with_listen(local(grpc + 4)),
        metrics: MetricsConfig {
            listen: Some(local(metrics + 4)),
        },
        database: database("reporting"),
        bus: bus.clone(),
        auth: auth.clone(),
        ..Default::default()
    })
    .await?;
    println!("giao dev is running (data in {}):", data.display());
    println!(
        "  connector      grpc {}  metrics http://127.0.0.1:{}/metrics",
        connector.grpc_addr(),
        metrics + 1
    );
    println!(
        "  message-store  grpc {}  metrics http://127.0.0.1:{}/metrics",
        message_store.grpc_addr(),
        metrics + 2
    );
    println!(
        "  assignment     grpc {}  metrics http://127.0.0.1:{}/metrics",
        assignment.grpc_addr(),
        metrics + 3
    );
    println!(
        "  reporting      grpc {}  metrics http://127.0.0.1:{}/metrics",
        reporting.grpc_addr(),
        metrics + 4
    );
    println!(
        "  auth           grpc {}  metrics http://127.0.0.1:{}/metrics",
        auth_service.grpc_addr(),
        metrics + 5
    );
    println!(
        "Demo tenant \"demo\"; laptop-only tokens: Bearer dev.demo.<user>.<admin|supervisor|agent|auditor>"
    );
    println!(
        "  grpcurl -plaintext -H 'authorization: Bearer dev.demo.u-admin.admin' {} giao.messagestore.v1.MessageStoreService/ListConversations",
        message_store.grpc_addr()
    );
    println!(
        "Demo users (password \"{}\"): {}",
        giao_auth::admin::DEV_PASSWORD,
        demo_users
            .iter()
            .filter_map(|user| user.email.clone())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  grpcurl -plaintext -d '{{\"tenant\":\"demo\",\"login\":\"admin@demo.giao.vn\",\"password\":\"{}\"}}' {} giao.auth.v1.AuthService/Login",
        giao_auth::admin::DEV_PASSWORD,
        auth_service.grpc_addr()
    );
    println!(
        "  then: grpcurl -plaintext -H 'authorization: Bearer <access_token>' {} giao.messagestore.v1.MessageStoreService/ListConversations",
        message_store.grpc_addr()
    );

    let assignment_addr = assignment.grpc_addr();
    let mut services = tokio::task::JoinSet::new();
    services.spawn(message_store.run(shutdown.clone()));
    services.spawn(assignment.run(shutdown.clone()));
    services.spawn(reporting.run(shutdown.clone()));
    services.spawn(auth_service.run(shutdown.clone()));
    // The demo feed starts once routing is set up, so its first customers get an owner too.
    match seed_demo_routing(assignment_addr, &demo_admin_token, &demo_agents).await {
        Ok(policy) => println!(
            "Routing is on: tenant \"{DEMO_TENANT}\" by {policy} over {} (online)",
            demo_agents
                .iter()
                .map(|user| user.email.clone().unwrap_or_else(|| user.id.clone()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "demo routing not set up; new conversations stay unassigned"
            );
        }
    }
    services.spawn(connector.run(shutdown.clone()));
    let mut outcome = Ok(());
    while let Some(joined) = services.join_next().await {
        let result = joined
            .map_err(anyhow::Error::from)
            .and_then(|result| result);
        if let Err(error) = result {
            outcome = Err(error);
        }
        // One service ending ends the suite.
        shutdown.cancel();
    }
    outcome
}

/// Gives the demo tenant a default routing policy (round robin over every agent, no
/// capacity limit) unless it has a policy already, mirrors its roster and sets the demo
/// agents online. Retried briefly: the services have only just started. Returns which
/// policy routes the tenant, for the start-up banner.
async fn seed_demo_routing(
    assignment: SocketAddr,
    admin_token: &str,
    agents: &[giao_auth::domain::UserRecord],
) -> anyhow::Result<&'static str> {
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{assignment}"))?.connect_lazy();
    let mut client = AssignmentServiceClient::with_interceptor(
        channel,
        TraceInterceptor::with_bearer(admin_token)?,
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = async {
            let policies = client
                .list_routing_policies(ListRoutingPoliciesRequest::default())
                .await?
                .into_inner()
                .policies;
            let policy = if policies.is_empty() {
                client
                    .set_routing_policy(SetRoutingPolicyRequest {
                        policy: Some(RoutingPolicy {
                            strategy: RoutingStrategy::RoundRobin as i32,
                            sticky_owner: true,
                            ..Default::default()
                        }),
                    })
                    .await?;
                "round robin (default policy)"
            } else {
                "its existing routing policies"
            };
            client.sync_roster(SyncRosterRequest {}).await?;
            for agent in agents {
                client
                    .set_availability(SetAvailabilityRequest {
                        user_id: agent.id.clone(),
                        availability: Availability::Online as i32,
                    })
                    .await?;
            }
            Ok::<_, tonic::Status>(policy)
        }
        .await;
        match attempt {
            Ok(policy) => return Ok(policy),
            Err(status) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%status, "demo routing: assignment not ready, retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
}

/// Every service verifies the auth service's tokens, and on a laptop also developer tokens.
fn giao_authz_dev(auth_port: u16) -> giao_authz::AuthConfig {
    giao_authz::AuthConfig {
        endpoint: format!("http://127.0.0.1:{auth_port}"),
        dev_tokens: true,
        ..Default::default()
    }
}
