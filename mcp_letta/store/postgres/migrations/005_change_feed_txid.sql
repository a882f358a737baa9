-- 005: each change row carries the transaction that wrote it. Writers no longer take a lock to number
-- their changes in commit order, so ids may commit out of order; a follower reads every row whose
-- transaction might have been running at its last read (txid at or above that snapshot's xmin) and skips
-- the ids it has seen (``_foreign_changes``). The NOTIFY now follows the commit in its own tiny transaction.
ALTER TABLE changes ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX changes_by_txid ON changes(txid);
