// Host driver: the walship extension inside node's better-sqlite3 (its own bundled SQLite, built
// with URI filenames disabled, so the VFS is selected with walship_default(1), not ?vfs=).
//
// Usage: node driver.js EXT DB COPY_FROM COPY_TO OTHER_DB
//   EXT        path of libwalvfs.so
//   DB         database to create through walship (the default VFS while it is opened)
//   COPY_FROM  the replica directory, copied to COPY_TO right after walship_flush returns, so the
//              test can restore exactly what was durable at that moment (before close)
//   OTHER_DB   opened after walship_default(0): must NOT go through walship
// walship_flush is called after transaction 25 and at the end. Prints one JSON line. The workload matches tests/python/test_hosts.py `expected_rows()`.
'use strict';
const fs = require('fs');
const Database = require('better-sqlite3');

const [ext, dbPath, copyFrom, copyTo, otherPath] = process.argv.slice(2);
if (!otherPath) {
  console.error('usage: node driver.js EXT DB COPY_FROM COPY_TO OTHER_DB');
  process.exit(2);
}

const TXNS = 50;
const ROWS_PER_TXN = 40;

function payload(i) {
  const len = i % 10 === 0 ? 3000 + (i % 7) * 100 : 32;
  const b = Buffer.alloc(len);
  for (let j = 0; j < len; j++) b[j] = (i * 31 + j * 7) & 0xff;
  return b;
}

const db0 = new Database(':memory:');
db0.loadExtension(ext);
const defaultOn = db0.prepare('select walship_default(1) as d').get().d;

const db = new Database(dbPath);
const journalMode = db.pragma('journal_mode = WAL', { simple: true });
db.pragma('cache_size = -8000');
db.exec('CREATE TABLE items(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, label TEXT NOT NULL, payload BLOB)');
const ins = db.prepare('INSERT INTO items(id, n, label, payload) VALUES (?, ?, ?, ?)');
const batch = db.transaction((t) => {
  for (let k = 0; k < ROWS_PER_TXN; k++) {
    const i = t * ROWS_PER_TXN + k;
    ins.run(i + 1, (i * i) % 1000003, `row-${i}`, payload(i));
  }
});
let txidMid = null;
for (let t = 0; t < TXNS; t++) {
  batch(t);
  if (t === TXNS / 2 - 1) txidMid = db.prepare('select walship_flush(10000) as t').get().t;
}

const counts = db.prepare('SELECT count(*) AS rows, sum(length(payload)) AS blob_bytes FROM items').get();
const txid = db.prepare('select walship_flush(10000) as t').get().t;
fs.cpSync(copyFrom, copyTo, { recursive: true });
const status = db.prepare('select walship_status() as s').get().s;
const version = db.prepare('select sqlite_version() as v').get().v;

// Back to the OS VFS: a database opened now is served by SQLite alone.
const defaultOff = db0.prepare('select walship_default(0) as d').get().d;
const other = new Database(otherPath);
other.pragma('journal_mode = WAL');
other.exec('CREATE TABLE x(a); INSERT INTO x VALUES (1)');
let otherFlushError = null;
try {
  other.prepare('select walship_flush(100) as t').get();
} catch (e) {
  otherFlushError = String(e.message);
}
other.close();

db.close();
db0.close();
console.log(JSON.stringify({
  host: 'better-sqlite3',
  sqlite_version: version,
  journal_mode: journalMode,
  default_on: defaultOn,
  default_off: defaultOff,
  rows: counts.rows,
  blob_bytes: counts.blob_bytes,
  txid_mid: txidMid,
  txid,
  txid_type: typeof txid,
  status,
  other_flush_error: otherFlushError,
}));
