// The user's service, reduced to what matters here: better-sqlite3, WAL, an 8 MB page cache,
// and walship configured by the litestream.yml in the project root (the working directory).
// Usage: node parako.js EXT ROWS   — prints one JSON line {txid, status}
'use strict';
const fs = require('fs');
const Database = require('better-sqlite3');

const [ext, rowsArg] = process.argv.slice(2);
const rows = Number(rowsArg || 500);
const loader = new Database(':memory:');
loader.loadExtension(ext);
loader.prepare('select walship_default(1)').get(); // better-sqlite3 has no URI filenames

fs.mkdirSync('./data', { recursive: true });
const db = new Database('./data/parako.db');
db.pragma('journal_mode = WAL');
db.pragma('cache_size = -8000');
db.exec('CREATE TABLE IF NOT EXISTS sessions(id INTEGER PRIMARY KEY, sub TEXT NOT NULL, payload TEXT)');
const ins = db.prepare('INSERT INTO sessions(sub, payload) VALUES (?, ?)');
for (let i = 0; i < rows; i++) ins.run(`user${i % 50}`, 'x'.repeat(100 + (i % 500)));
db.prepare('UPDATE sessions SET payload = ? WHERE id % 10 = 0').run('rotated');
const txid = db.prepare('select walship_flush(20000) as t').get().t;
const status = JSON.parse(db.prepare('select walship_status() as s').get().s);
db.close();
console.log(JSON.stringify({ txid, status }));
