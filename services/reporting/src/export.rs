//! CSV exports: hourly aggregate rows (hours labelled in the report's time zone), one row
//! per agent, or one row per conversation; streamed in chunks.

use std::pin::Pin;

use chrono::SecondsFormat;
use giao_proto::reporting::{AgentScorecard, ExportReportChunk};
use tonic::Status;

use crate::{
    domain::{Scope, time::from_micros},
    store::{ConversationRow, HourlyRow},
};

/// Chunks of at most this many bytes (a gRPC message stays far below the size limit).
const CHUNK_BYTES: usize = 64 * 1024;

pub type ChunkStream =
    Pin<Box<dyn futures::Stream<Item = Result<ExportReportChunk, Status>> + Send + 'static>>;

/// Splits a CSV document into chunks on line boundaries.
pub fn chunks(csv: String) -> ChunkStream {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for line in csv.split_inclusive('\n') {
        if current.len() + line.len() > CHUNK_BYTES && !current.is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    Box::pin(futures::stream::iter(pieces.into_iter().map(|piece| {
        Ok(ExportReportChunk {
            csv: piece.into_bytes(),
        })
    })))
}

/// One CSV field, quoted when it holds a separator, a quote or a line break; a leading
/// formula character is neutralised so spreadsheets do not evaluate it.
fn field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

fn line(fields: &[String]) -> String {
    let mut text = fields
        .iter()
        .map(|value| field(value))
        .collect::<Vec<_>>()
        .join(",");
    text.push('\n');
    text
}

fn local(micros: i64, scope: &Scope) -> String {
    from_micros(micros)
        .with_timezone(&scope.zone)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn seconds(micros: Option<i64>) -> String {
    micros
        .map(|micros| format!("{:.3}", micros as f64 / 1e6))
        .unwrap_or_default()
}

pub fn hourly_csv(rows: &[HourlyRow], scope: &Scope) -> String {
    let mut csv = line(
        &[
            "hour",
            "user_id",
            "team_id",
            "channel_account_id",
            "lead_source",
            "messages_in",
            "messages_out",
            "conversations_opened",
            "conversations_assigned",
            "conversations_closed",
            "first_responses",
            "responses",
            "sla_met",
            "sla_breached",
            "new_contacts",
            "conversions",
            "transferred_waiting",
            "flagged_messages",
        ]
        .map(String::from),
    );
    for row in rows {
        let mut fields = vec![
            local(row.hour, scope),
            row.user_id.clone(),
            row.team_id.clone(),
            row.channel_account_id.clone(),
            row.lead_source.clone(),
        ];
        fields.extend(
            [
                row.messages_in,
                row.messages_out,
                row.conversations_opened,
                row.conversations_assigned,
                row.conversations_closed,
                row.first_responses,
                row.responses,
                row.sla_met,
                row.sla_breached,
                row.new_contacts,
                row.conversions,
                row.transferred_waiting,
                row.flagged_messages,
            ]
            .map(|value| value.to_string()),
        );
        csv.push_str(&line(&fields));
    }
    csv
}

pub fn scorecards_csv<'a>(cards: impl Iterator<Item = &'a AgentScorecard>) -> String {
    let mut csv = line(
        &[
            "user_id",
            "conversations_handled",
            "messages_in",
            "messages_out",
            "first_response_p50_seconds",
            "first_response_p90_seconds",
            "response_p50_seconds",
            "response_p90_seconds",
            "sla_met_ratio",
            "unanswered",
            "long_silences",
            "conversions",
            "flagged_messages",
        ]
        .map(String::from),
    );
    let secs = |value: &Option<prost_types::Duration>| {
        value
            .as_ref()
            .map(|value| format!("{:.3}", value.seconds as f64 + value.nanos as f64 / 1e9))
            .unwrap_or_default()
    };
    for card in cards {
        csv.push_str(&line(&[
            card.user_id.clone(),
            card.conversations_handled.to_string(),
            card.messages_in.to_string(),
            card.messages_out.to_string(),
            secs(&card.first_response_p50),
            secs(&card.first_response_p90),
            secs(&card.response_p50),
            secs(&card.response_p90),
            format!("{:.4}", card.sla_met_ratio),
            card.unanswered.to_string(),
            card.long_silences.to_string(),
            card.conversions.to_string(),
            card.flagged_messages.to_string(),
        ]));
    }
    csv
}

pub fn conversations_csv(rows: &[ConversationRow], scope: &Scope) -> String {
    let mut csv = line(
        &[
            "conversation_id",
            "channel_account_id",
            "owner_user_id",
            "team_id",
            "lead_source",
            "opened_at",
            "closed_at",
            "first_response_seconds",
            "waiting_since",
            "messages_in",
            "messages_out",
            "last_message_at",
        ]
        .map(String::from),
    );
    let at = |micros: Option<i64>| {
        micros
            .map(|micros| local(micros, scope))
            .unwrap_or_default()
    };
    for row in rows {
        csv.push_str(&line(&[
            row.conversation_id.clone(),
            row.channel_account_id.clone(),
            row.owner_user_id.clone(),
            row.team_id.clone(),
            row.lead_source.clone(),
            at(row.opened_at),
            at(row.closed_at),
            seconds(row.first_response_micros),
            at(row.customer_waiting_since),
            row.messages_in.to_string(),
            row.messages_out.to_string(),
            at(row.last_message_at),
        ]));
    }
    csv
}

pub fn care_transitions_csv(rows: &[(i64, String, String, String, i64)], scope: &Scope) -> String {
    let mut csv = line(
        &[
            "hour",
            "lead_source",
            "from_status",
            "to_status",
            "contacts",
        ]
        .map(String::from),
    );
    for (hour, lead_source, from, to, count) in rows {
        csv.push_str(&line(&[
            local(*hour, scope),
            lead_source.clone(),
            from.clone(),
            to.clone(),
            count.to_string(),
        ]));
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=SUM(A1)"), "'=SUM(A1)");
    }
}
