//! The gRPC surface: permission, scope validation, visibility, then the store. Every query
//! is scoped to the caller's tenant; an agent, team or account the caller may not see (or
//! that no event ever named) answers NotFound.

use std::{collections::BTreeMap, sync::Arc};

use giao_authz::{Permission, Principal, principal};
use giao_platform::error::invalid_field;
use giao_proto::{
    common::PageResponse,
    reporting::{
        AccountActivityRequest, AccountActivityResponse, AgentScorecard, AgentScorecardRequest,
        AgentScorecardResponse, DrillDownRequest, DrillDownResponse, ExportReportRequest,
        FunnelRow, GetReportSettingsRequest, LeadSourceFunnelRequest, LeadSourceFunnelResponse,
        ReportSettings, SetReportSettingsRequest, SlaComplianceRequest, SlaComplianceResponse,
        SlaComplianceRow, TeamDashboardRequest, TeamDashboardResponse,
        reporting_service_server::ReportingService,
    },
};
use tonic::{Request, Response, Status};

use crate::{
    Settings,
    domain::{
        Scope, Visibility, check_id,
        clock::Fact,
        sketch::Histogram,
        time::{self, micros},
    },
    error::Error,
    export,
    store::{DrillMetric, Group, RowFilter, Store},
};

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 500;

#[derive(Clone)]
pub struct Api {
    store: Store,
    settings: Arc<Settings>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

fn duration(micros: Option<i64>) -> Option<prost_types::Duration> {
    micros.map(|micros| prost_types::Duration {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    })
}

fn now() -> i64 {
    micros(chrono::Utc::now())
}

/// The caller, after the permission every reporting RPC needs.
fn caller<T>(request: &Request<T>) -> Result<Principal, Status> {
    let caller = principal(request)?;
    caller.require(Permission::REPORTS_READ)?;
    Ok(caller)
}

impl Api {
    pub fn new(store: Store, settings: Arc<Settings>) -> Self {
        Self { store, settings }
    }

    /// The tenant's zone: its own when it set one, the service's otherwise.
    async fn tenant_zone(&self, tenant: &str) -> Result<chrono_tz::Tz, Error> {
        Ok(self
            .store
            .tenant_zone(tenant)
            .await?
            .as_deref()
            .and_then(time::parse_zone)
            .unwrap_or(self.settings.zone))
    }

    /// A request's scope, checked; without a zone of its own it takes the tenant's.
    async fn scope(
        &self,
        tenant: &str,
        scope: Option<&giao_proto::reporting::ReportScope>,
    ) -> Result<Scope, Error> {
        // Bad input is refused before the tenant's zone is looked up.
        let parsed = Scope::parse(scope, self.settings.zone)?;
        if scope.is_some_and(|scope| !scope.time_zone.is_empty()) {
            return Ok(parsed);
        }
        Ok(Scope {
            zone: self.tenant_zone(tenant).await?,
            ..parsed
        })
    }

    /// Scorecards keyed by `group` (the empty key for totals).
    pub async fn scorecards(
        &self,
        tenant: &str,
        scope: &Scope,
        filter: &RowFilter,
        group: Group,
    ) -> Result<BTreeMap<String, AgentScorecard>, Error> {
        let (first, every) = if scope.business_hours_only {
            ("frt_bh", "rt_bh")
        } else {
            ("frt", "rt")
        };
        let cutoff = scope.cutoff(now());
        let kinds = [first, every];
        let facts = [Fact::Handled.name(), Fact::Conversion.name()];
        // The four reads are independent: run them side by side on the pool.
        let (counters, hist_rows, fact_rows, waiting) = futures::try_join!(
            self.store
                .counters(tenant, scope.start, scope.end, filter, group),
            self.store
                .histograms(tenant, scope.start, scope.end, filter, &kinds, group),
            self.store
                .fact_counts(tenant, scope.start, scope.end, filter, &facts, group,),
            self.store.waiting(
                tenant,
                cutoff,
                cutoff - self.settings.long_silence_micros,
                filter,
                group,
            ),
        )?;
        let mut cards: BTreeMap<String, AgentScorecard> = BTreeMap::new();
        let card = |cards: &mut BTreeMap<String, AgentScorecard>, key: &str| {
            cards
                .entry(key.to_string())
                .or_insert_with(|| AgentScorecard {
                    user_id: key.to_string(),
                    ..Default::default()
                })
                .clone()
        };
        for row in counters {
            let mut entry = card(&mut cards, &row.key);
            let positive = |value: i64| u64::try_from(value).unwrap_or_default();
            entry.messages_in = positive(row.messages_in);
            entry.messages_out = positive(row.messages_out);
            entry.first_responses = positive(row.first_responses);
            entry.responses = positive(row.responses);
            entry.sla_met = positive(row.sla_met);
            entry.sla_breached = positive(row.sla_breached);
            entry.flagged_messages = positive(row.flagged_messages);
            entry.transferred_waiting = positive(row.transferred_waiting);
            entry.conversations_assigned = positive(row.conversations_assigned);
            let judged = row.sla_met + row.sla_breached;
            entry.sla_met_ratio = if judged > 0 {
                row.sla_met as f64 / judged as f64
            } else {
                0.0
            };
            cards.insert(row.key, entry);
        }
        let mut histograms: BTreeMap<(String, String), Histogram> = BTreeMap::new();
        for row in hist_rows {
            histograms
                .entry((row.key, row.kind))
                .or_default()
                .add(row.bucket, u64::try_from(row.count).unwrap_or_default());
        }
        for ((key, kind), histogram) in histograms {
            let mut entry = card(&mut cards, &key);
            if kind == first {
                entry.first_response_p50 = duration(histogram.quantile(0.5));
                entry.first_response_p90 = duration(histogram.quantile(0.9));
            } else {
                entry.response_p50 = duration(histogram.quantile(0.5));
                entry.response_p90 = duration(histogram.quantile(0.9));
            }
            cards.insert(key, entry);
        }
        for row in fact_rows {
            let count = u64::try_from(row.conversations).unwrap_or_default();
            let mut entry = card(&mut cards, &row.key);
            match Fact::named(&row.metric) {
                Some(Fact::Handled) => entry.conversations_handled = count,
                Some(Fact::Conversion) => entry.conversions = count,
                _ => continue,
            }
            cards.insert(row.key, entry);
        }
        for row in waiting {
            let mut entry = card(&mut cards, &row.key);
            entry.unanswered = u64::try_from(row.waiting).unwrap_or_default();
            entry.long_silences = u64::try_from(row.long_waiting).unwrap_or_default();
            cards.insert(row.key, entry);
        }
        Ok(cards)
    }

    /// NotFound unless `user_id` appeared in an event and the caller may see them; the
    /// caller's own figures are always there (empty when nothing happened yet).
    async fn check_user(&self, caller: &Principal, user_id: &str) -> Result<(), Error> {
        if user_id == caller.user_id {
            return Ok(());
        }
        let visibility = Visibility::of(caller);
        match self.store.user_teams(&caller.tenant_id, user_id).await? {
            Some(teams) if visibility.can_see_user(user_id, &teams) => Ok(()),
            _ => Err(Error::NotFound {
                what: "user_id",
                id: user_id.to_string(),
            }),
        }
    }

    /// A user, team or account named in the dimensions must exist for this tenant (and the
    /// user be visible): NotFound otherwise, as everywhere else.
    async fn check_dimensions(&self, caller: &Principal, filter: &RowFilter) -> Result<(), Error> {
        if let Some(user_id) = &filter.user_id {
            self.check_user(caller, user_id).await?;
        }
        if let Some(team_id) = &filter.team_id
            && !self.store.team_known(&caller.tenant_id, team_id).await?
        {
            return Err(Error::NotFound {
                what: "team_id",
                id: team_id.clone(),
            });
        }
        if let Some(account_id) = &filter.channel_account_id
            && !self
                .store
                .account_known(&caller.tenant_id, account_id, &filter.visibility)
                .await?
        {
            return Err(Error::NotFound {
                what: "channel_account_id",
                id: account_id.clone(),
            });
        }
        Ok(())
    }

    /// Dimension filters of a drill-down or export, validated.
    fn dimension_filter(
        caller: &Principal,
        dimensions: &std::collections::HashMap<String, String>,
    ) -> Result<RowFilter, Error> {
        let mut filter = RowFilter::new(Visibility::of(caller));
        for (key, value) in dimensions {
            let field = format!("dimensions.{key}");
            check_id(&field, value)?;
            let slot = match key.as_str() {
                "user_id" => &mut filter.user_id,
                "team_id" => &mut filter.team_id,
                "channel_account_id" => &mut filter.channel_account_id,
                "lead_source" => &mut filter.lead_source,
                _ => {
                    return Err(Error::InvalidArgument(invalid_field(
                        "dimensions",
                        key,
                        "expected user_id, team_id, channel_account_id or lead_source",
                    )));
                }
            };
            *slot = Some(value.clone());
        }
        Ok(filter)
    }
}

#[tonic::async_trait]
impl ReportingService for Api {
    async fn agent_scorecard(
        &self,
        request: Request<AgentScorecardRequest>,
    ) -> Result<Response<AgentScorecardResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let scope = self
            .scope(&caller.tenant_id, request.scope.as_ref())
            .await?;
        check_id("user_id", &request.user_id)?;
        let user_id = if request.user_id.is_empty() {
            caller.user_id.clone()
        } else {
            request.user_id
        };
        self.check_user(&caller, &user_id).await?;
        let mut filter = RowFilter::new(Visibility::of(&caller));
        filter.user_id = Some(user_id.clone());
        let mut cards = self
            .scorecards(&caller.tenant_id, &scope, &filter, Group::Total)
            .await?;
        let mut scorecard = cards.remove("").unwrap_or_default();
        scorecard.user_id = user_id;
        Ok(Response::new(AgentScorecardResponse {
            scorecard: Some(scorecard),
        }))
    }

    async fn team_dashboard(
        &self,
        request: Request<TeamDashboardRequest>,
    ) -> Result<Response<TeamDashboardResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let scope = self
            .scope(&caller.tenant_id, request.scope.as_ref())
            .await?;
        if request.team_id.is_empty() {
            return Err(Error::InvalidArgument("missing team_id: required".into()).into());
        }
        check_id("team_id", &request.team_id)?;
        let visibility = Visibility::of(&caller);
        if !visibility.can_see_team(&request.team_id)
            || !self
                .store
                .team_known(&caller.tenant_id, &request.team_id)
                .await?
        {
            return Err(Error::NotFound {
                what: "team_id",
                id: request.team_id,
            }
            .into());
        }
        let mut filter = RowFilter::new(visibility);
        filter.team_id = Some(request.team_id.clone());
        let mut total = self
            .scorecards(&caller.tenant_id, &scope, &filter, Group::Total)
            .await?
            .remove("")
            .unwrap_or_default();
        total.user_id = String::new();
        let agents = self
            .scorecards(&caller.tenant_id, &scope, &filter, Group::User)
            .await?
            .into_iter()
            .filter(|(user, _)| !user.is_empty())
            .map(|(_, card)| card)
            .collect();
        Ok(Response::new(TeamDashboardResponse {
            team_total: Some(total),
            agents,
        }))
    }

    async fn account_activity(
        &self,
        request: Request<AccountActivityRequest>,
    ) -> Result<Response<AccountActivityResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let scope = self
            .scope(&caller.tenant_id, request.scope.as_ref())
            .await?;
        if request.channel_account_id.is_empty() {
            return Err(
                Error::InvalidArgument("missing channel_account_id: required".into()).into(),
            );
        }
        check_id("channel_account_id", &request.channel_account_id)?;
        let visibility = Visibility::of(&caller);
        if !self
            .store
            .account_known(&caller.tenant_id, &request.channel_account_id, &visibility)
            .await?
        {
            return Err(Error::NotFound {
                what: "channel_account_id",
                id: request.channel_account_id,
            }
            .into());
        }
        let mut filter = RowFilter::new(visibility);
        filter.channel_account_id = Some(request.channel_account_id.clone());
        let totals = self
            .store
            .counters(
                &caller.tenant_id,
                scope.start,
                scope.end,
                &filter,
                Group::Total,
            )
            .await?
            .into_iter()
            .next()
            .unwrap_or_default();
        let disconnected = self
            .store
            .disconnected_micros(
                &caller.tenant_id,
                &request.channel_account_id,
                scope.start,
                scope.end.min(now()),
            )
            .await?;
        let positive = |value: i64| u64::try_from(value).unwrap_or_default();
        Ok(Response::new(AccountActivityResponse {
            messages_in: positive(totals.messages_in),
            messages_out: positive(totals.messages_out),
            conversations_opened: positive(totals.conversations_opened),
            time_disconnected: duration(Some(disconnected)),
        }))
    }

    async fn lead_source_funnel(
        &self,
        request: Request<LeadSourceFunnelRequest>,
    ) -> Result<Response<LeadSourceFunnelResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let scope = self
            .scope(&caller.tenant_id, request.scope.as_ref())
            .await?;
        let rows = self
            .store
            .funnel(
                &caller.tenant_id,
                scope.start,
                scope.end,
                &RowFilter::new(Visibility::of(&caller)),
            )
            .await?;
        Ok(Response::new(LeadSourceFunnelResponse {
            rows: rows
                .into_iter()
                .map(|(lead_source, care_stage, contacts)| FunnelRow {
                    lead_source,
                    care_stage,
                    contacts: u64::try_from(contacts).unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn sla_compliance(
        &self,
        request: Request<SlaComplianceRequest>,
    ) -> Result<Response<SlaComplianceResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let scope = self
            .scope(&caller.tenant_id, request.scope.as_ref())
            .await?;
        check_id("team_id", &request.team_id)?;
        let visibility = Visibility::of(&caller);
        let mut filter = RowFilter::new(visibility.clone());
        if !request.team_id.is_empty() {
            let visible = visibility.can_see_team(&request.team_id)
                || matches!(visibility, Visibility::Own(_));
            if !visible
                || !self
                    .store
                    .team_known(&caller.tenant_id, &request.team_id)
                    .await?
            {
                return Err(Error::NotFound {
                    what: "team_id",
                    id: request.team_id,
                }
                .into());
            }
            filter.team_id = Some(request.team_id);
        }
        let rows = self
            .store
            .sla_rows(&caller.tenant_id, scope.start, scope.end, &filter)
            .await?;
        Ok(Response::new(SlaComplianceResponse {
            rows: rows
                .into_iter()
                .map(|row| SlaComplianceRow {
                    user_id: row.user_id,
                    policy_id: row.policy_id,
                    met: u64::try_from(row.met).unwrap_or_default(),
                    breached: u64::try_from(row.breached).unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn drill_down(
        &self,
        request: Request<DrillDownRequest>,
    ) -> Result<Response<DrillDownResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let scope = self
            .scope(&caller.tenant_id, request.scope.as_ref())
            .await?;
        if request.metric.is_empty() {
            return Err(Error::InvalidArgument("missing metric: required".into()).into());
        }
        let filter = Api::dimension_filter(&caller, &request.dimensions)?;
        self.check_dimensions(&caller, &filter).await?;
        let cutoff = scope.cutoff(now());
        let metric = match request.metric.as_str() {
            "unanswered" => DrillMetric::Waiting {
                cutoff,
                long_since: None,
            },
            "long_silences" => DrillMetric::Waiting {
                cutoff,
                long_since: Some(cutoff - self.settings.long_silence_micros),
            },
            // The scorecard's names for the conversation facts.
            "conversations_handled" => DrillMetric::Fact(Fact::Handled.name()),
            "first_response_p50" | "first_response_p90" | "first_responses" => {
                DrillMetric::Fact(Fact::FirstResponse.name())
            }
            "response_p50" | "response_p90" | "responses" => {
                DrillMetric::Fact(Fact::Response.name())
            }
            "flagged_messages" => DrillMetric::Fact(Fact::Flagged.name()),
            "conversations_assigned" => DrillMetric::Fact(Fact::Assigned.name()),
            "conversations_opened" => DrillMetric::Fact(Fact::Opened.name()),
            "conversations_closed" => DrillMetric::Fact(Fact::Closed.name()),
            other => match Fact::named(other) {
                Some(fact) => DrillMetric::Fact(fact.name()),
                None => {
                    return Err(Error::InvalidArgument(invalid_field(
                        "metric",
                        other,
                        "expected a figure of the reports, e.g. unanswered, handled, first_response, sla_breached (docs/reporting.md)",
                    ))
                    .into());
                }
            },
        };
        let page = request.page.unwrap_or_default();
        let size = match page.page_size {
            0 => DEFAULT_PAGE,
            size => size.min(MAX_PAGE),
        };
        check_id("page.cursor", &page.cursor)?;
        let mut ids = self
            .store
            .drill(
                &caller.tenant_id,
                metric,
                scope.start,
                scope.end,
                &filter,
                &page.cursor,
                i64::from(size) + 1,
            )
            .await?;
        let next_cursor = if ids.len() > size as usize {
            ids.truncate(size as usize);
            ids.last().cloned().unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(DrillDownResponse {
            conversation_ids: ids,
            page: Some(PageResponse { next_cursor }),
        }))
    }

    async fn export_report(
        &self,
        request: Request<ExportReportRequest>,
    ) -> Result<Response<export::ChunkStream>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let scope = self
            .scope(&caller.tenant_id, request.scope.as_ref())
            .await?;
        let filter = Api::dimension_filter(&caller, &request.dimensions)?;
        self.check_dimensions(&caller, &filter).await?;
        let tenant = caller.tenant_id.as_str();
        let csv = if request.per_conversation {
            let rows = self
                .store
                .conversation_rows(tenant, scope.start, scope.end, &filter)
                .await?;
            export::conversations_csv(&rows, &scope)
        } else {
            match request.report.as_str() {
                "" | "hourly" => {
                    let rows = self
                        .store
                        .hourly_rows(tenant, scope.start, scope.end, &filter)
                        .await?;
                    export::hourly_csv(&rows, &scope)
                }
                "agent_scorecard" => {
                    let cards = self
                        .scorecards(tenant, &scope, &filter, Group::User)
                        .await?;
                    export::scorecards_csv(cards.values())
                }
                "care_transitions" => {
                    // Contacts are not owned by one agent: the whole tenant's view only.
                    if Visibility::of(&caller) != Visibility::All {
                        return Err(Status::permission_denied(
                            "report care_transitions covers the whole tenant: admins and auditors only",
                        ));
                    }
                    let rows = self
                        .store
                        .care_transitions(tenant, scope.start, scope.end)
                        .await?;
                    export::care_transitions_csv(&rows, &scope)
                }
                other => {
                    return Err(Error::InvalidArgument(invalid_field(
                        "report",
                        other,
                        "expected hourly, agent_scorecard or care_transitions",
                    ))
                    .into());
                }
            }
        };
        Ok(Response::new(export::chunks(csv)))
    }

    async fn get_report_settings(
        &self,
        request: Request<GetReportSettingsRequest>,
    ) -> Result<Response<ReportSettings>, Status> {
        let caller = caller(&request)?;
        let zone = self.tenant_zone(&caller.tenant_id).await?;
        Ok(Response::new(ReportSettings {
            time_zone: zone.name().to_string(),
        }))
    }

    async fn set_report_settings(
        &self,
        request: Request<SetReportSettingsRequest>,
    ) -> Result<Response<ReportSettings>, Status> {
        let caller = principal(&request)?;
        caller.require(Permission::USERS_MANAGE)?;
        let request = request.into_inner();
        let zone = if request.time_zone.is_empty() {
            None
        } else {
            let zone = time::parse_zone(&request.time_zone).ok_or_else(|| {
                Error::InvalidArgument(invalid_field(
                    "time_zone",
                    &request.time_zone,
                    "expected an IANA time zone such as Asia/Ho_Chi_Minh",
                ))
            })?;
            Some(zone.name())
        };
        self.store.set_tenant_zone(&caller.tenant_id, zone).await?;
        tracing::info!(tenant = %caller.tenant_id, time_zone = zone.unwrap_or("default"), "reporting time zone set");
        let zone = self.tenant_zone(&caller.tenant_id).await?;
        Ok(Response::new(ReportSettings {
            time_zone: zone.name().to_string(),
        }))
    }
}

/// For tests and the bench: a timestamp from microseconds.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    time::to_timestamp(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_microseconds() {
        let value = duration(Some(1_500_000)).expect("some");
        assert_eq!((value.seconds, value.nanos), (1, 500_000_000));
        assert_eq!(duration(None), None);
    }
}
