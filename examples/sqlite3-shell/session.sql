-- A sqlite3 shell session writing through walship; ./litestream.yml names app.db and its replica.
-- Run from this directory (after `make build`):
--   sqlite3 -cmd '.load ../../target/release/libwalvfs' < session.sql
.bail on
.open file:app.db?vfs=walship
PRAGMA journal_mode=WAL;
PRAGMA cache_size=-8000;
CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL, created_at TEXT NOT NULL);
BEGIN;
INSERT INTO notes(body, created_at) SELECT 'note ' || value, datetime('now') FROM generate_series(1, 1000);
COMMIT;
UPDATE notes SET body = body || ' (edited)' WHERE id % 10 = 0;
SELECT 'notes', count(*) FROM notes;
-- Returns the replica's TXID once everything above is durable in the replica.
SELECT 'replica txid', walship_flush(10000);
SELECT 'status', walship_status();
