//! The connector's gRPC surface. Account management and the Zalo adapters arrive with their
//! issues; today it lists accounts and drives the simulator channel.

use giao_authz::{Permission, principal};
use giao_proto::{
    common::{ChannelUser, PageResponse},
    connector::{
        ChannelAccount, ListAccountsRequest, ListAccountsResponse, SimulateInboundRequest,
        SimulateInboundResponse, connector_service_server::ConnectorService,
    },
};
use tonic::{Request, Response, Status};

use crate::{error::Error, simulator::Simulator, store::AccountStore};

const MAX_TEXT_CHARS: usize = 8_000;

#[derive(Debug, Clone)]
pub struct Api {
    accounts: AccountStore,
    simulator: Simulator,
}

impl Api {
    pub fn new(accounts: AccountStore, simulator: Simulator) -> Self {
        Self {
            accounts,
            simulator,
        }
    }
}

#[tonic::async_trait]
impl ConnectorService for Api {
    #[tracing::instrument(skip_all)]
    async fn list_accounts(
        &self,
        request: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::ACCOUNTS_READ)?;
        let accounts = self
            .accounts
            .list(&caller.tenant_id)
            .await
            .map_err(Error::from)?;
        Ok(Response::new(ListAccountsResponse {
            accounts: accounts
                .into_iter()
                .map(|account| ChannelAccount {
                    channel_account_id: account.id,
                    kind: account.kind,
                    display_name: account.display_name,
                    status: account.status,
                    ..Default::default()
                })
                .collect(),
            page: Some(PageResponse::default()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn simulate_inbound(
        &self,
        request: Request<SimulateInboundRequest>,
    ) -> Result<Response<SimulateInboundResponse>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::SIMULATOR_DRIVE)?;
        let request = request.into_inner();
        if request.channel_account_id.is_empty() {
            return Err(
                Error::InvalidArgument("missing channel_account_id: required".into()).into(),
            );
        }
        let customer: ChannelUser = request
            .customer
            .filter(|customer| !customer.external_user_id.is_empty())
            .ok_or_else(|| {
                Error::InvalidArgument("missing customer.external_user_id: required".into())
            })?;
        let content = request
            .content
            .ok_or_else(|| Error::InvalidArgument("missing content: required".into()))?;
        let chars = content.text.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(Error::InvalidArgument(format!(
                "invalid content.text: {chars} characters, at most {MAX_TEXT_CHARS}"
            ))
            .into());
        }
        let external_id = Some(request.external_message_id).filter(|id| !id.is_empty());
        let simulated = self
            .simulator
            .inbound(
                &caller.tenant_id,
                &request.channel_account_id,
                customer,
                content,
                external_id,
            )
            .await?;
        Ok(Response::new(SimulateInboundResponse {
            external_message_id: simulated.external_message_id,
            event_id: simulated.event_id,
        }))
    }
}
