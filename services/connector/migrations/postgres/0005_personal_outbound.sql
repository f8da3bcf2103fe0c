-- zalo_personal sends: the outbound consumer only queues the request here (the row it
-- already writes before any send), and the replica holding the account's session lease
-- sends it, so one replica paces each account. created_at orders the queue (microseconds).
ALTER TABLE outbound_messages ADD COLUMN request BYTEA;
ALTER TABLE outbound_messages ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX outbound_messages_queue
    ON outbound_messages (tenant_id, channel_account_id, state, created_at);
-- A message giao sent comes back on the account's websocket as one "typed by the owner":
-- found here by Zalo's msgId, it is not captured a second time.
CREATE INDEX outbound_messages_external
    ON outbound_messages (tenant_id, channel_account_id, external_message_id);
