//! Bootstrap: the first tenant and its admin (`giao admin create-tenant`), and the demo
//! tenant `giao dev` seeds. Both work directly on the auth database, before or beside a
//! running service.

use anyhow::Context;
use giao_proto::{auth::CreateUserRequest, common};
use giao_storage::Database;
use serde_json::json;

use crate::{
    Config, MIGRATIONS,
    domain::{self, TenantRecord, UserRecord, audit::NewAudit},
    error::Error,
    store::{self, Store},
};

/// The password every demo user of `giao dev` has. Laptop only.
pub const DEV_PASSWORD: &str = "giao-dev-password";

/// The demo tenant of `giao dev`.
pub const DEMO_TENANT: &str = "demo";

/// What [`create_tenant`] made. The password is shown once and never stored in clear.
pub struct CreatedTenant {
    pub tenant: TenantRecord,
    pub user: UserRecord,
    pub password: String,
}

impl std::fmt::Debug for CreatedTenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedTenant")
            .field("tenant", &self.tenant)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

async fn open_store(config: &Config) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let database = Database::connect(&config.database).await?;
    database
        .migrate(&MIGRATIONS)
        .await
        .context("cannot migrate the auth database")?;
    Ok(store::for_database(&database))
}

/// Creates a tenant and its first admin. Without `password` one is generated (and returned,
/// to be shown once). Fails when the tenant already exists.
pub async fn create_tenant(
    config: &Config,
    tenant_slug: &str,
    display_name: &str,
    admin_email: &str,
    password: Option<String>,
) -> anyhow::Result<CreatedTenant> {
    let store = open_store(config).await?;
    let slug = domain::validate_tenant_slug("tenant", tenant_slug)?;
    let display_name = if display_name.trim().is_empty() {
        slug.clone()
    } else {
        domain::validate_display_name(display_name)?
    };
    let tenant = TenantRecord {
        id: slug.clone(),
        display_name,
        created_at: domain::audit::truncate_to_micros(chrono::Utc::now()),
    };
    if !store.create_tenant(&tenant).await? {
        anyhow::bail!("tenant {slug} already exists");
    }
    store
        .append_audit(
            &slug,
            &NewAudit::new("system", "tenant.created", &slug, json!({})),
        )
        .await?;
    let password = password.unwrap_or_else(domain::random_secret);
    let user = crate::api::create_user(
        store.as_ref(),
        &slug,
        "system",
        CreateUserRequest {
            email: admin_email.to_string(),
            display_name: "Administrator".into(),
            role: common::Role::Admin as i32,
            initial_password: password.clone(),
            ..Default::default()
        },
    )
    .await?;
    Ok(CreatedTenant {
        tenant,
        user,
        password,
    })
}

/// The demo users of `giao dev`, one per role: `<role>@demo.giao.vn`.
pub const DEMO_USERS: &[(&str, common::Role)] = &[
    ("admin", common::Role::Admin),
    ("supervisor", common::Role::Supervisor),
    ("agent", common::Role::Agent),
    ("auditor", common::Role::Auditor),
];

/// Creates the demo tenant and its users when missing; running it again changes nothing.
pub async fn seed_demo(config: &Config) -> anyhow::Result<Vec<UserRecord>> {
    let store = open_store(config).await?;
    let tenant = TenantRecord {
        id: DEMO_TENANT.into(),
        display_name: "Demo company".into(),
        created_at: domain::audit::truncate_to_micros(chrono::Utc::now()),
    };
    store.create_tenant(&tenant).await?;
    let mut users = Vec::new();
    for (name, role) in DEMO_USERS {
        let email = format!("{name}@demo.giao.vn");
        let user = match store.user_by_login(DEMO_TENANT, &email).await? {
            Some(user) => user,
            None => {
                let created = crate::api::create_user(
                    store.as_ref(),
                    DEMO_TENANT,
                    "system",
                    CreateUserRequest {
                        email,
                        display_name: format!("Demo {name}"),
                        role: *role as i32,
                        initial_password: DEV_PASSWORD.into(),
                        team_ids: if *role == common::Role::Admin {
                            Vec::new()
                        } else {
                            vec!["sales".into()]
                        },
                        idempotency_key: format!("demo-{name}"),
                        ..Default::default()
                    },
                )
                .await;
                match created {
                    Ok(user) => user,
                    Err(Error::AlreadyExists(message)) => anyhow::bail!(message),
                    Err(error) => return Err(error.into()),
                }
            }
        };
        users.push(user);
    }
    Ok(users)
}
