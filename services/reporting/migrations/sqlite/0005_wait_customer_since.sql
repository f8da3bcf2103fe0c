-- When the customer's wait began, kept on every owner's share of it: a transfer starts a
-- new share, but a long silence is measured from the customer's first unanswered message.
-- An open share takes the conversation's running wait when that began earlier (the share
-- was opened by a transfer). A closed share folded before this column knows only its own
-- start: its customer's wait is no longer kept anywhere.
ALTER TABLE waits ADD COLUMN customer_since BIGINT;
UPDATE waits SET customer_since = COALESCE(
    (SELECT c.customer_waiting_since FROM conversations c
     WHERE c.tenant_id = waits.tenant_id AND c.conversation_id = waits.conversation_id
       AND waits.ended_at IS NULL AND c.customer_waiting_since <= waits.started_at),
    started_at);
