// A small better-sqlite3 service: WAL, an 8 MB page cache, one process, HTTP in front.
//   POST /notes  (body: the note)  -> 201 {"id": n}
//   GET  /notes                    -> {"count": n}
//   GET  /backup                   -> walship_status() of the database
// Replicated by walship as ./litestream.yml says; SIGTERM/SIGINT wait for the replica first.
// The two lines that differ from the Litestream-sidecar version are in docs/COMING-FROM-LITESTREAM.md
// (the `require` and the `open`, plus `flushOnExit`).
'use strict';
const fs = require('fs');
const http = require('http');
const { open, flushOnExit } = require('walship');

fs.mkdirSync('data', { recursive: true });
const db = open('data/app.db');
flushOnExit(db);
db.pragma('journal_mode = WAL');
db.pragma('cache_size = -8000');
db.exec('CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL, created_at TEXT NOT NULL)');

const insert = db.prepare('INSERT INTO notes(body, created_at) VALUES (?, ?)');
const count = db.prepare('SELECT count(*) FROM notes').pluck();

function reply(res, code, value) {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
}

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/notes') {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      const { lastInsertRowid } = insert.run(body, new Date().toISOString());
      reply(res, 201, { id: Number(lastInsertRowid) });
    });
  } else if (req.method === 'GET' && req.url === '/notes') {
    reply(res, 200, { count: count.get() });
  } else if (req.method === 'GET' && req.url === '/backup') {
    reply(res, 200, JSON.parse(db.prepare('SELECT walship_status()').pluck().get()));
  } else {
    reply(res, 404, { error: 'not found' });
  }
});

server.listen(Number(process.env.PORT || 3000), process.env.HOST || '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}`);
});
