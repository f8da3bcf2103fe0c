-- At most one open outage per channel account. Two replicas folding status changes of one
-- account at once could each find none open and both open one, counting the overlap twice;
-- with this index the second insert waits for the first and then does nothing.
-- Outages left open twice by that race before this index end where they began.
UPDATE account_outages SET ended_at = started_at
WHERE ended_at IS NULL
  AND started_at > (
    SELECT MIN(o.started_at) FROM account_outages o
    WHERE o.tenant_id = account_outages.tenant_id
      AND o.channel_account_id = account_outages.channel_account_id
      AND o.ended_at IS NULL
  );
CREATE UNIQUE INDEX account_outages_one_open ON account_outages (tenant_id, channel_account_id)
    WHERE ended_at IS NULL;
