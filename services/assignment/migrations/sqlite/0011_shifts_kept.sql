-- A handover leaves with the leaver each shift that overlaps one the heir already works,
-- and reports how many.
ALTER TABLE offboarding_jobs ADD COLUMN shifts_kept BIGINT NOT NULL DEFAULT 0;
