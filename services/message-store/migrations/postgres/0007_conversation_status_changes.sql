-- When the status last changed through SetConversationStatus: the id of the ConversationClosed
-- event derives from it, so a retried close re-announces under the same id (deduplicated) and
-- a later close of the reopened conversation is a new event.
ALTER TABLE conversations ADD COLUMN status_changed_at TIMESTAMPTZ;
