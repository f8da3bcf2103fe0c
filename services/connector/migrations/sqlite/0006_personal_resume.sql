-- Where the next listener of a zalo_personal account resumes: the newest msgId captured
-- (published) per thread kind, so messages sent while no listener ran (a crash, a lease
-- moving to another replica, a new login) are asked for and captured. since_ms (Unix ms)
-- bounds the replay of a thread kind nothing was captured in yet.
CREATE TABLE personal_positions (
    tenant_id          TEXT NOT NULL,
    channel_account_id TEXT NOT NULL,
    last_direct_msg_id TEXT,
    last_group_msg_id  TEXT,
    since_ms           BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, channel_account_id)
);
-- The clientId a personal send was made with, written before the call: Zalo may echo the
-- message on the socket (cliMsgId) before the call returns its msgId.
ALTER TABLE outbound_messages ADD COLUMN client_message_id TEXT NOT NULL DEFAULT '';
CREATE INDEX outbound_messages_client
    ON outbound_messages (tenant_id, channel_account_id, client_message_id);
