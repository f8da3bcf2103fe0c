-- A handover reports the customers it moved (distinct contacts of the moved conversations).
ALTER TABLE offboarding_jobs ADD COLUMN contacts_moved BIGINT NOT NULL DEFAULT 0;
