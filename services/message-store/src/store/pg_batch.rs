//! AppendInboundBatch on PostgreSQL: a whole batch in one transaction with a handful of
//! set-based statements (UNNEST arrays) instead of five round trips per message, so a bulk
//! import or a backfill runs at a rate close to a raw COPY of the same rows.
//!
//! The outcome is the same as appending the messages one by one in batch order: duplicates
//! (already stored, or repeated inside the batch) change nothing and answer with the stored
//! message; conversation counters and times fold the batch's new messages in order.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::postgres::{
    CONVERSATION_COLUMNS, ConversationRow, LOCK_CONVERSATIONS, MESSAGE_INSERT_COLUMNS, MessageRow,
    PostgresStore, conversation_columns, delivered_status, message_columns, small,
};
use crate::{
    domain::{AppendOutcome, ConversationRecord, StoredMessage, contact, inbound::NewInbound},
    error::Error,
};

type ThreadKey = (String, String);

/// Contacts of (channel account `$2`, external user `$3`) pairs of tenant `$1`. Batch
/// lookups here go key by key (a lateral subquery with LIMIT, which the planner can neither
/// flatten nor turn into a hash join): a batch names at most MAX_BATCH keys, and on tables
/// without statistics a join was planned as a scan of the whole tenant per batch.
const CONTACTS_BY_IDENTITY: &str = "SELECT w.account, w.user_id, i.contact_id \
     FROM UNNEST($2::text[], $3::text[]) AS w(account, user_id) \
     CROSS JOIN LATERAL (SELECT contact_id FROM contact_identities \
         WHERE tenant_id = $1 AND channel_account_id = w.account \
           AND external_user_id = w.user_id LIMIT 1) AS i";

/// What the batch's new messages do to one conversation, folded in batch order.
#[derive(Default)]
struct ThreadChange {
    latest_at: Option<DateTime<Utc>>,
    latest_inbound_at: Option<DateTime<Utc>>,
    latest_outbound_at: Option<DateTime<Utc>>,
    /// An outbound message reset the unread count; `unread_added` counts inbound after it.
    reset_unread: bool,
    unread_added: i32,
    preview: String,
    contact_id: Option<Uuid>,
}

impl ThreadChange {
    fn fold(&mut self, message: &NewInbound, inbound: bool, contact_id: Option<Uuid>) {
        let at = message.sent_at;
        if self.latest_at.is_none_or(|latest| at >= latest) {
            self.latest_at = Some(at);
            self.preview = message.preview();
        }
        if inbound {
            self.latest_inbound_at = Some(self.latest_inbound_at.map_or(at, |t| t.max(at)));
            self.unread_added += 1;
        } else {
            self.latest_outbound_at = Some(self.latest_outbound_at.map_or(at, |t| t.max(at)));
            self.reset_unread = true;
            self.unread_added = 0;
        }
        if self.contact_id.is_none() {
            self.contact_id = contact_id;
        }
    }
}

fn is_inbound(message: &NewInbound) -> bool {
    message.direction == giao_proto::common::Direction::Inbound as i32
}

impl PostgresStore {
    pub(super) async fn append_batch(
        &self,
        messages: &[NewInbound],
        now: DateTime<Utc>,
    ) -> Result<Vec<AppendOutcome>, Error> {
        if let Some(outcomes) = self.append_batch_once(messages, now, true).await? {
            return Ok(outcomes);
        }
        // A remembered id named a conversation that is gone, which only a database restored
        // under a running replica can cause: forget them all and look everything up.
        tracing::warn!(
            "a remembered conversation id was not found; looking conversations up again"
        );
        self.forget_conversations();
        self.append_batch_once(messages, now, false)
            .await?
            .ok_or_else(|| Error::Inconsistent("a conversation of the batch is missing".into()))
    }

    /// One attempt; `None` (nothing written) when a conversation the batch was going to
    /// update is not there.
    async fn append_batch_once(
        &self,
        messages: &[NewInbound],
        now: DateTime<Utc>,
        remembered: bool,
    ) -> Result<Option<Vec<AppendOutcome>>, Error> {
        let Some(first) = messages.first() else {
            return Ok(Some(Vec::new()));
        };
        let tenant_id = first.tenant_id.as_str();
        if messages
            .iter()
            .any(|message| message.tenant_id != tenant_id)
        {
            return Err(Error::InvalidArgument(
                "invalid messages: one batch belongs to one tenant".into(),
            ));
        }
        let mut tx = self.pool().begin().await?;

        // The first occurrence of each channel message inside the batch; repeats are duplicates.
        let mut first_index: HashMap<(&str, &str), usize> = HashMap::new();
        let mut candidates = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let key = (
                message.channel_account_id.as_str(),
                message.external_message_id.as_str(),
            );
            if let std::collections::hash_map::Entry::Vacant(slot) = first_index.entry(key) {
                slot.insert(index);
                candidates.push(index);
            }
        }

        let contacts = self.resolve_contacts(&mut tx, messages, now).await?;
        let (created_threads, conversation_ids) = self
            .ensure_conversations(&mut tx, messages, now, &contacts, remembered)
            .await?;

        // Claim the dedupe keys; the ones that already existed are not new.
        let message_ids: Vec<Uuid> = candidates.iter().map(|_| Uuid::now_v7()).collect();
        let claimed: HashSet<(String, String)> = sqlx::query_as::<_, (String, String)>(
            "INSERT INTO message_keys (tenant_id, channel_account_id, external_message_id, message_id, sent_at) \
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::uuid[], $5::timestamptz[]) \
             ON CONFLICT DO NOTHING RETURNING channel_account_id, external_message_id",
        )
        .bind(tenant_id)
        .bind(candidates.iter().map(|&i| messages[i].channel_account_id.clone()).collect::<Vec<_>>())
        .bind(candidates.iter().map(|&i| messages[i].external_message_id.clone()).collect::<Vec<_>>())
        .bind(&message_ids)
        .bind(candidates.iter().map(|&i| messages[i].sent_at).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let fresh: Vec<(usize, Uuid)> = candidates
            .iter()
            .zip(&message_ids)
            .filter(|&(&index, _)| {
                let message = &messages[index];
                claimed.contains(&(
                    message.channel_account_id.clone(),
                    message.external_message_id.clone(),
                ))
            })
            .map(|(&index, &id)| (index, id))
            .collect();

        // Fold the new messages into their conversations, in batch order.
        let mut changes: Vec<(ThreadKey, ThreadChange)> = Vec::new();
        let mut change_index: HashMap<ThreadKey, usize> = HashMap::new();
        for &(index, _) in &fresh {
            let message = &messages[index];
            let key = thread_key(message);
            let slot = *change_index.entry(key.clone()).or_insert_with(|| {
                changes.push((key, ThreadChange::default()));
                changes.len() - 1
            });
            let contact = message
                .contact_key()
                .and_then(|user| contacts.get(&(message.channel_account_id.clone(), user)))
                .map(|&(id, _)| id);
            changes[slot].1.fold(message, is_inbound(message), contact);
        }
        // Every multi-row update of conversations locks them in id order (see
        // `update_conversations`).
        let mut changes: Vec<(Uuid, ThreadChange)> = changes
            .into_iter()
            .map(|(key, change)| {
                conversation_ids
                    .get(&key)
                    .map(|&id| (id, change))
                    .ok_or_else(|| Error::Inconsistent("conversation of a batch is missing".into()))
            })
            .collect::<Result<_, _>>()?;
        changes.sort_by_key(|&(id, _)| id);

        // Messages first, conversation rows last: the row locks that concurrent batches
        // contend for are then held only for the update and the commit, not for the bulk
        // insert and its index maintenance.
        let mut stored: HashMap<usize, StoredMessage> = HashMap::new();
        if !fresh.is_empty() {
            stored = insert_messages(&mut tx, messages, &fresh, &conversation_ids, now).await?;
        }
        let mut conversations: HashMap<ThreadKey, ConversationRecord> =
            update_conversations(&mut tx, tenant_id, &changes).await?;
        if conversations.len() != changes.len() {
            // Dropping the transaction rolls the messages back.
            return Ok(None);
        }
        tx.commit().await?;
        self.remember_conversations(tenant_id, conversation_ids);

        // Answer duplicates with what is stored, as a single append would.
        let duplicates: Vec<usize> = (0..messages.len())
            .filter(|index| !stored.contains_key(index))
            .collect();
        let existing = self.existing_many(tenant_id, messages, &duplicates).await?;
        let missing: Vec<ThreadKey> = duplicates
            .iter()
            .map(|&index| thread_key(&messages[index]))
            .filter(|key| !conversations.contains_key(key))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for record in self.conversations_by_thread(tenant_id, &missing).await? {
            conversations.insert(
                (
                    record.channel_account_id.clone(),
                    record.external_thread_id.clone(),
                ),
                record,
            );
        }

        // Where each conversation and each contact first appears in the batch.
        let mut thread_first: HashMap<ThreadKey, usize> = HashMap::new();
        let mut contact_first: HashMap<(String, Option<String>), usize> = HashMap::new();
        for (index, message) in messages.iter().enumerate() {
            thread_first.entry(thread_key(message)).or_insert(index);
            contact_first
                .entry((message.channel_account_id.clone(), message.contact_key()))
                .or_insert(index);
        }

        let mut outcomes = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let key = thread_key(message);
            let conversation = conversations.get(&key).cloned().ok_or_else(|| {
                Error::Inconsistent("conversation of a stored message is missing".into())
            })?;
            let contact = message
                .contact_key()
                .and_then(|user| contacts.get(&(message.channel_account_id.clone(), user)));
            let outcome = match stored.remove(&index) {
                Some(row) => AppendOutcome {
                    message: row,
                    created: true,
                    conversation_created: created_threads.contains(&key)
                        && thread_first.get(&key) == Some(&index),
                    contact_id: contact.map(|&(id, _)| id),
                    contact_created: contact.is_some_and(|&(_, created)| created)
                        && contact_first
                            .get(&(message.channel_account_id.clone(), message.contact_key()))
                            == Some(&index),
                    conversation,
                },
                None => {
                    let row = existing
                        .get(&(
                            message.channel_account_id.clone(),
                            message.external_message_id.clone(),
                        ))
                        .cloned()
                        .ok_or_else(|| {
                            Error::Inconsistent("message key without a message".into())
                        })?;
                    AppendOutcome {
                        message: row,
                        created: false,
                        contact_id: conversation.contact_id,
                        conversation,
                        conversation_created: false,
                        contact_created: false,
                    }
                }
            };
            outcomes.push(outcome);
        }
        Ok(Some(outcomes))
    }

    /// Contacts of every customer in the batch: one lookup for the known ones, then the
    /// unknown ones created one by one (each takes the next customer code).
    async fn resolve_contacts(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: &[NewInbound],
        now: DateTime<Utc>,
    ) -> Result<HashMap<(String, String), (Uuid, bool)>, Error> {
        let mut wanted: Vec<(usize, (String, String))> = Vec::new();
        let mut seen = HashSet::new();
        for (index, message) in messages.iter().enumerate() {
            if let Some(user) = message.contact_key() {
                let key = (message.channel_account_id.clone(), user);
                if seen.insert(key.clone()) {
                    wanted.push((index, key));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let tenant_id = &messages[0].tenant_id;
        let mut found: HashMap<(String, String), (Uuid, bool)> =
            sqlx::query_as::<_, (String, String, Uuid)>(CONTACTS_BY_IDENTITY)
                .bind(tenant_id)
                .bind(
                    wanted
                        .iter()
                        .map(|(_, (a, _))| a.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    wanted
                        .iter()
                        .map(|(_, (_, u))| u.as_str())
                        .collect::<Vec<_>>(),
                )
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(|(account, user, id)| ((account, user), (id, false)))
                .collect();
        // New customers in key order, so concurrent batches wait on each other in one order.
        let mut unknown: Vec<(usize, (String, String))> = wanted
            .into_iter()
            .filter(|(_, key)| !found.contains_key(key))
            .collect();
        unknown.sort_by(|a, b| a.1.cmp(&b.1));
        if !unknown.is_empty() {
            let created = self.create_contacts(tx, messages, &unknown, now).await?;
            found.extend(created);
        }
        Ok(found)
    }

    /// Creates the contacts of customers seen for the first time, set-based: one statement
    /// takes a block of customer codes, one claims the identities, one inserts the contacts
    /// and one their phones — the same outcome as creating them one by one in key order.
    async fn create_contacts(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: &[NewInbound],
        unknown: &[(usize, (String, String))],
        now: DateTime<Utc>,
    ) -> Result<HashMap<(String, String), (Uuid, bool)>, Error> {
        let tenant_id = &messages[0].tenant_id;
        let count = unknown.len() as i64;
        // Codes come from their own short statement, outside this transaction (see
        // `resolve_contact`); codes of customers another batch created first are skipped.
        let last: i64 = sqlx::query_scalar(
            "INSERT INTO contact_codes (tenant_id, last_number) VALUES ($1, $2) \
             ON CONFLICT (tenant_id) DO UPDATE SET last_number = contact_codes.last_number + $2 \
             RETURNING last_number",
        )
        .bind(tenant_id)
        .bind(count)
        .fetch_one(self.pool())
        .await?;
        let pipeline = self.pipeline_stages(tenant_id).await?;
        let first_stage = pipeline.first().cloned().unwrap_or_else(|| "new".into());
        let ids: Vec<Uuid> = unknown.iter().map(|_| Uuid::now_v7()).collect();
        let names: Vec<String> = unknown
            .iter()
            .map(|(index, _)| messages[*index].customer.display_name.trim().to_string())
            .collect();
        // Claim the identities first: a concurrent first sight of the same customer waits
        // here, then finds the contact the winner created.
        let claimed: HashSet<Uuid> = sqlx::query_scalar::<_, Uuid>(
            "INSERT INTO contact_identities (tenant_id, channel_account_id, external_user_id, contact_id, display_name, avatar_url) \
             SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[]) \
             ON CONFLICT DO NOTHING RETURNING contact_id",
        )
        .bind(tenant_id)
        .bind(unknown.iter().map(|(_, (a, _))| a.as_str()).collect::<Vec<_>>())
        .bind(unknown.iter().map(|(_, (_, u))| u.as_str()).collect::<Vec<_>>())
        .bind(&ids)
        .bind(&names)
        .bind(
            unknown
                .iter()
                .map(|(index, _)| messages[*index].customer.avatar_url.as_str())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();

        let mut resolved = HashMap::with_capacity(unknown.len());
        let mut new_ids = Vec::new();
        let mut new_codes = Vec::new();
        let mut new_names = Vec::new();
        let mut new_folded = Vec::new();
        let mut phone_ids = Vec::new();
        let mut phones = Vec::new();
        let mut lost = Vec::new();
        for (offset, ((index, key), id)) in unknown.iter().zip(&ids).enumerate() {
            if !claimed.contains(id) {
                lost.push(key.clone());
                continue;
            }
            new_ids.push(*id);
            new_codes.push(contact::customer_code(last - count + 1 + offset as i64));
            new_folded.push(crate::domain::text::fold(&names[offset]));
            new_names.push(names[offset].clone());
            // A phone the channel shared is kept when it is a real number.
            if let Ok(phone) = crate::domain::phone::normalize(&messages[*index].customer.phone) {
                phone_ids.push(*id);
                phones.push(phone);
            }
            resolved.insert(key.clone(), (*id, true));
        }
        if !new_ids.is_empty() {
            sqlx::query(
                "INSERT INTO contacts (id, tenant_id, customer_code, display_name, care_status, folded_name, created_at, updated_at) \
                 SELECT u.id, $1, u.code, u.name, $5, u.folded, $6, $6 \
                 FROM UNNEST($2::uuid[], $3::text[], $4::text[], $7::text[]) AS u(id, code, name, folded)",
            )
            .bind(tenant_id)
            .bind(&new_ids)
            .bind(&new_codes)
            .bind(&new_names)
            .bind(&first_stage)
            .bind(now)
            .bind(&new_folded)
            .execute(&mut **tx)
            .await?;
        }
        if !phones.is_empty() {
            sqlx::query(
                "INSERT INTO contact_phones (tenant_id, contact_id, phone) \
                 SELECT $1, * FROM UNNEST($2::uuid[], $3::text[]) ON CONFLICT DO NOTHING",
            )
            .bind(tenant_id)
            .bind(&phone_ids)
            .bind(&phones)
            .execute(&mut **tx)
            .await?;
        }
        if !lost.is_empty() {
            // Another batch created these customers while this one waited on their identities.
            let winners = sqlx::query_as::<_, (String, String, Uuid)>(CONTACTS_BY_IDENTITY)
                .bind(tenant_id)
                .bind(lost.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>())
                .bind(lost.iter().map(|(_, u)| u.as_str()).collect::<Vec<_>>())
                .fetch_all(&mut **tx)
                .await?;
            if winners.len() != lost.len() {
                // An identity is never deleted; a miss here is a broken invariant.
                return Err(Error::Database(sqlx::Error::RowNotFound));
            }
            for (account, user, id) in winners {
                resolved.insert((account, user), (id, false));
            }
        }
        Ok(resolved)
    }

    /// Ids of every conversation of the batch, creating the ones the batch is the first to
    /// see; also returns the thread keys it created.
    async fn ensure_conversations(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: &[NewInbound],
        now: DateTime<Utc>,
        contacts: &HashMap<(String, String), (Uuid, bool)>,
        remembered: bool,
    ) -> Result<(HashSet<ThreadKey>, HashMap<ThreadKey, Uuid>), Error> {
        let tenant_id = messages[0].tenant_id.as_str();
        let mut seen = HashSet::new();
        let threads: Vec<ThreadKey> = messages
            .iter()
            .map(thread_key)
            .filter(|key| seen.insert(key.clone()))
            .collect();
        // Known conversations are only read: an INSERT ... ON CONFLICT on an existing row
        // waits for whichever concurrent batch is updating that row to commit, which would
        // queue this whole batch behind it before any of its own work.
        // Conversations this replica saw committed need no lookup at all.
        let mut ids = if remembered {
            self.known_conversations(tenant_id, &threads)
        } else {
            HashMap::new()
        };
        let unknown: Vec<ThreadKey> = threads
            .iter()
            .filter(|key| !ids.contains_key(*key))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            ids.extend(conversation_ids(tx, tenant_id, &unknown).await?);
        }
        let mut firsts: Vec<&NewInbound> = messages
            .iter()
            .filter(|message| {
                let key = thread_key(message);
                !ids.contains_key(&key) && seen.remove(&key)
            })
            .collect();
        if firsts.is_empty() {
            return Ok((HashSet::new(), ids));
        }
        // Concurrent batches touch conversations in one global order, so they never deadlock.
        firsts.sort_by_key(|message| thread_key(message));
        let created = sqlx::query_as::<_, (String, String, Uuid)>(
            "INSERT INTO conversations (id, tenant_id, channel_account_id, channel_kind, external_thread_id, \
             thread_kind, customer_external_id, title, status, last_activity_at, created_at, contact_id) \
             SELECT u.id, $1, u.account, u.kind, u.thread, u.thread_kind, u.customer, u.title, 1, u.at, $2, u.contact \
             FROM UNNEST($3::uuid[], $4::text[], $5::int2[], $6::text[], $7::int2[], $8::text[], $9::text[], \
                         $10::timestamptz[], $11::uuid[]) \
                  AS u(id, account, kind, thread, thread_kind, customer, title, at, contact) \
             ON CONFLICT ON CONSTRAINT conversations_thread_key DO NOTHING \
             RETURNING channel_account_id, external_thread_id, id",
        )
        .bind(tenant_id)
        .bind(now)
        .bind(firsts.iter().map(|_| Uuid::now_v7()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|m| m.channel_account_id.clone()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|m| small(m.channel_kind)).collect::<Vec<_>>())
        .bind(firsts.iter().map(|m| m.external_thread_id.clone()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|m| small(m.thread_kind)).collect::<Vec<_>>())
        .bind(firsts.iter().map(|m| m.customer.external_user_id.clone()).collect::<Vec<_>>())
        .bind(
            firsts
                .iter()
                .map(|m| {
                    if m.group_name.is_empty() {
                        m.customer.display_name.clone()
                    } else {
                        m.group_name.clone()
                    }
                })
                .collect::<Vec<_>>(),
        )
        .bind(firsts.iter().map(|m| m.sent_at).collect::<Vec<_>>())
        .bind(
            firsts
                .iter()
                .map(|m| {
                    m.contact_key()
                        .and_then(|user| contacts.get(&(m.channel_account_id.clone(), user)))
                        .map(|&(id, _)| id)
                })
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut **tx)
        .await?;
        let mut created_threads = HashSet::with_capacity(created.len());
        for (account, thread, id) in created {
            ids.insert((account.clone(), thread.clone()), id);
            created_threads.insert((account, thread));
        }
        // Conversations a concurrent batch created first (the insert waited for it to commit).
        let lost: Vec<ThreadKey> = firsts
            .iter()
            .map(|message| thread_key(message))
            .filter(|key| !ids.contains_key(key))
            .collect();
        if !lost.is_empty() {
            ids.extend(conversation_ids(tx, tenant_id, &lost).await?);
        }
        Ok((created_threads, ids))
    }

    /// Stored messages of the given batch positions, by (channel account, external id).
    async fn existing_many(
        &self,
        tenant_id: &str,
        messages: &[NewInbound],
        indexes: &[usize],
    ) -> Result<HashMap<(String, String), StoredMessage>, Error> {
        if indexes.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM UNNEST($2::text[], $3::text[]) AS w(account, external_id) \
             CROSS JOIN LATERAL (SELECT k.message_id, k.sent_at FROM message_keys k \
                 WHERE k.tenant_id = $1 AND k.channel_account_id = w.account \
                   AND k.external_message_id = w.external_id LIMIT 1) AS k \
             CROSS JOIN LATERAL (SELECT {columns} FROM messages m \
                 WHERE m.id = k.message_id AND m.sent_at = k.sent_at LIMIT 1) AS m",
            columns = message_columns("m")
        )))
        .bind(tenant_id)
        .bind(
            indexes
                .iter()
                .map(|&i| messages[i].channel_account_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            indexes
                .iter()
                .map(|&i| messages[i].external_message_id.clone())
                .collect::<Vec<_>>(),
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .into_iter()
            .map(StoredMessage::from)
            .map(|message| {
                (
                    (
                        message.channel_account_id.clone(),
                        message.external_message_id.clone().unwrap_or_default(),
                    ),
                    message,
                )
            })
            .collect())
    }

    async fn conversations_by_thread(
        &self,
        tenant_id: &str,
        threads: &[ThreadKey],
    ) -> Result<Vec<ConversationRecord>, Error> {
        if threads.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query_as::<_, ConversationRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {columns} FROM UNNEST($2::text[], $3::text[]) AS w(account, thread) \
             CROSS JOIN LATERAL (SELECT {CONVERSATION_COLUMNS} FROM conversations \
                 WHERE tenant_id = $1 AND channel_account_id = w.account \
                   AND external_thread_id = w.thread LIMIT 1) AS c",
            columns = conversation_columns("c")
        )))
        .bind(tenant_id)
        .bind(threads.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>())
        .bind(threads.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}

fn thread_key(message: &NewInbound) -> ThreadKey {
    (
        message.channel_account_id.clone(),
        message.external_thread_id.clone(),
    )
}

/// Applies each conversation's folded change in one statement; the same rules as a single
/// append (times only move forward, a customer writing again reopens a closed conversation).
async fn update_conversations(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: &str,
    changes: &[(Uuid, ThreadChange)],
) -> Result<HashMap<ThreadKey, ConversationRecord>, Error> {
    if changes.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<Uuid> = changes.iter().map(|&(id, _)| id).collect();
    // The rows are locked in id order first (`LOCK_CONVERSATIONS`; an UPDATE ... FROM
    // locks in whatever order its join produces). These row locks are what concurrent
    // batches queue on, so this is the part of a batch that runs one at a time: one round
    // trip, and the rows found by primary key (the ids came with the batch's conversation
    // lookup), not again by thread key. The count is a one-time gate that runs the whole
    // `locked` CTE before the first row is updated, without joining it (a join with the CTE
    // was planned as a nested loop rescanning it once per row).
    let rows = sqlx::query_as::<_, ConversationRow>(sqlx::AssertSqlSafe(format!(
        "{LOCK_CONVERSATIONS} \
         UPDATE conversations c SET \
           last_activity_at = GREATEST(c.last_activity_at, u.latest_at), \
           last_inbound_at = CASE WHEN u.latest_in IS NULL THEN c.last_inbound_at \
                                  ELSE GREATEST(COALESCE(c.last_inbound_at, u.latest_in), u.latest_in) END, \
           last_outbound_at = CASE WHEN u.latest_out IS NULL THEN c.last_outbound_at \
                                   ELSE GREATEST(COALESCE(c.last_outbound_at, u.latest_out), u.latest_out) END, \
           unread_count = CASE WHEN u.reset THEN u.added ELSE c.unread_count + u.added END, \
           status = CASE WHEN u.latest_in IS NOT NULL AND c.status = 3 THEN 1 ELSE c.status END, \
           last_message_preview = CASE WHEN u.latest_at >= c.last_activity_at THEN u.preview ELSE c.last_message_preview END, \
           contact_id = COALESCE(c.contact_id, u.contact) \
         FROM UNNEST($2::uuid[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[], \
                     $6::bool[], $7::int4[], $8::text[], $9::uuid[]) \
              AS u(id, latest_at, latest_in, latest_out, reset, added, preview, contact) \
         WHERE c.tenant_id = $1 AND c.id = u.id AND (SELECT count(*) FROM locked) >= 0 \
         RETURNING {}",
        conversation_columns("c")
    )))
    .bind(tenant_id)
    .bind(&ids)
    .bind(changes.iter().map(|(_, c)| c.latest_at).collect::<Vec<_>>())
    .bind(changes.iter().map(|(_, c)| c.latest_inbound_at).collect::<Vec<_>>())
    .bind(changes.iter().map(|(_, c)| c.latest_outbound_at).collect::<Vec<_>>())
    .bind(changes.iter().map(|(_, c)| c.reset_unread).collect::<Vec<_>>())
    .bind(changes.iter().map(|(_, c)| c.unread_added).collect::<Vec<_>>())
    .bind(changes.iter().map(|(_, c)| c.preview.as_str()).collect::<Vec<_>>())
    .bind(changes.iter().map(|(_, c)| c.contact_id).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(ConversationRecord::from)
        .map(|record| {
            (
                (
                    record.channel_account_id.clone(),
                    record.external_thread_id.clone(),
                ),
                record,
            )
        })
        .collect())
}

/// Ids of those of the given conversations that exist.
async fn conversation_ids(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: &str,
    threads: &[ThreadKey],
) -> Result<HashMap<ThreadKey, Uuid>, Error> {
    let rows = sqlx::query_as::<_, (String, String, Uuid)>(
        "SELECT w.account, w.thread, c.id FROM UNNEST($2::text[], $3::text[]) AS w(account, thread) \
         CROSS JOIN LATERAL (SELECT id FROM conversations \
             WHERE tenant_id = $1 AND channel_account_id = w.account \
               AND external_thread_id = w.thread LIMIT 1) AS c",
    )
    .bind(tenant_id)
    .bind(threads.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>())
    .bind(threads.iter().map(|(_, t)| t.clone()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(account, thread, id)| ((account, thread), id))
        .collect())
}

async fn insert_messages(
    tx: &mut Transaction<'_, Postgres>,
    messages: &[NewInbound],
    fresh: &[(usize, Uuid)],
    conversations: &HashMap<ThreadKey, Uuid>,
    now: DateTime<Utc>,
) -> Result<HashMap<usize, StoredMessage>, Error> {
    let mut conversation_ids = Vec::with_capacity(fresh.len());
    for &(index, _) in fresh {
        let id = conversations
            .get(&thread_key(&messages[index]))
            .copied()
            .ok_or_else(|| {
                Error::Inconsistent("conversation of a new message is missing".into())
            })?;
        conversation_ids.push(id);
    }
    // Times as PostgreSQL keeps them (microseconds), so what is answered equals what is read.
    let now = micros(now);
    let contents: Vec<Vec<u8>> = fresh
        .iter()
        .map(|&(i, _)| prost::Message::encode_to_vec(&messages[i].content))
        .collect();
    // COPY rather than INSERT ... SELECT FROM UNNEST, as the bench's baseline writes them:
    // the server inserts the rows in bulk (one WAL record per page of rows instead of one per
    // row) and parses no arrays. Most of the rows' cost stays in their indexes (ADR 0010).
    let tenant_id = &messages[0].tenant_id;
    let mut rows = BinaryCopy::with_capacity(fresh.len() * 512);
    for ((&(index, id), &conversation_id), content) in
        fresh.iter().zip(&conversation_ids).zip(&contents)
    {
        let message = &messages[index];
        rows.row(MESSAGE_INSERT_FIELDS);
        rows.uuid(id);
        rows.text(tenant_id);
        rows.uuid(conversation_id);
        rows.text(&message.channel_account_id);
        rows.text(&message.external_message_id);
        rows.small(small(message.direction));
        rows.small(small(message.sender_kind));
        rows.null(); // sender_user_id: a customer or the phone, never a staff member
        rows.text(&message.sender_external_id);
        rows.small(small(message.content.r#type));
        rows.text(&message.content.text);
        rows.bytes(content);
        match &message.quote_external_id {
            Some(quote) => rows.text(quote),
            None => rows.null(),
        }
        rows.small(small(delivered_status(is_inbound(message))));
        rows.timestamp(micros(message.sent_at));
        rows.timestamp(now);
        rows.text(&crate::domain::text::fold(&message.content.text));
    }
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY messages ({MESSAGE_INSERT_COLUMNS}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    copy.send(rows.finish()).await?;
    let copied = copy.finish().await?;
    if copied != fresh.len() as u64 {
        return Err(Error::Inconsistent(format!(
            "{copied} of {} new messages were written",
            fresh.len()
        )));
    }
    // The rows are exactly what was written: answer from memory rather than reading 500
    // rows (and their content) back.
    Ok(fresh
        .iter()
        .zip(conversation_ids)
        .zip(contents)
        .map(|((&(index, id), conversation_id), content)| {
            let message = &messages[index];
            (
                index,
                StoredMessage {
                    id,
                    tenant_id: message.tenant_id.clone(),
                    conversation_id,
                    channel_account_id: message.channel_account_id.clone(),
                    external_message_id: Some(message.external_message_id.clone()),
                    direction: message.direction,
                    sender_kind: message.sender_kind,
                    sender_user_id: None,
                    sender_external_id: message.sender_external_id.clone(),
                    content_type: message.content.r#type,
                    text: message.content.text.clone(),
                    content,
                    quote_external_id: message.quote_external_id.clone(),
                    delivery_status: delivered_status(is_inbound(message)),
                    sent_at: micros(message.sent_at),
                    stored_at: now,
                    recalled_at: None,
                    recalled_by: None,
                    failure_reason: None,
                },
            )
        })
        .collect())
}

fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    chrono::DurationRound::duration_trunc(at, chrono::Duration::microseconds(1)).unwrap_or(at)
}

/// How many columns `MESSAGE_INSERT_COLUMNS` names: the field count of every COPY row.
const MESSAGE_INSERT_FIELDS: i16 = super::column_count(MESSAGE_INSERT_COLUMNS);

/// Rows in PostgreSQL's binary COPY format: a signature and two zero words, then per row
/// its field count and each field as a length-prefixed value in the type's binary form
/// (length -1 for NULL), then -1 as the end.
struct BinaryCopy(Vec<u8>);

impl BinaryCopy {
    /// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
    const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

    fn with_capacity(capacity: usize) -> Self {
        let mut buffer = Vec::with_capacity(capacity + 19);
        buffer.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buffer.extend_from_slice(&0i32.to_be_bytes()); // flags
        buffer.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        Self(buffer)
    }

    fn row(&mut self, fields: i16) {
        self.0.extend_from_slice(&fields.to_be_bytes());
    }

    fn bytes(&mut self, value: &[u8]) {
        // A field over 2 GiB cannot reach here: text and content are bounded far below it.
        let length = i32::try_from(value.len()).unwrap_or(i32::MAX);
        self.0.extend_from_slice(&length.to_be_bytes());
        self.0.extend_from_slice(value);
    }

    fn text(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    fn null(&mut self) {
        self.0.extend_from_slice(&(-1i32).to_be_bytes());
    }

    fn uuid(&mut self, value: Uuid) {
        self.bytes(value.as_bytes());
    }

    fn small(&mut self, value: i16) {
        self.bytes(&value.to_be_bytes());
    }

    fn timestamp(&mut self, at: DateTime<Utc>) {
        self.bytes(&(at.timestamp_micros() - Self::PG_EPOCH_MICROS).to_be_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&(-1i16).to_be_bytes());
        self.0
    }
}
