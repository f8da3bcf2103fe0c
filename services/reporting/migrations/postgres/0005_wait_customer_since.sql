-- When the customer's wait began, kept on every owner's share of it: a transfer starts a
-- new share, but a long silence is measured from the customer's first unanswered message.
-- Shares folded before this column know only their own start.
ALTER TABLE waits ADD COLUMN customer_since BIGINT;
UPDATE waits SET customer_since = started_at;
