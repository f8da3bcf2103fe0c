-- A handover gives thousands of customers a new owner at once. The owner is in no index of
-- contacts, so that update can be a HOT update (no index entry written, the trigram index
-- included) whenever the page holds room for the new row version. Half-full pages let every
-- customer on a page change owner in place; contacts are a small table beside messages, so
-- the space is cheap. Applies to pages written from now on; `VACUUM FULL contacts` repacks
-- an existing table (see docs/decisions/0007).
ALTER TABLE contacts SET (fillfactor = 50);
