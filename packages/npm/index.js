// walship for better-sqlite3: opens databases through the `walship` VFS so they replicate as
// litestream.yml says, and waits for the replica before the process exits.
//
// Owns: finding the prebuilt extension for this platform, loading it into better-sqlite3's
// SQLite, switching the default VFS around one open (better-sqlite3 has no URI filenames, so
// there is no `?vfs=`), and the optional SIGTERM/SIGINT handler. Never: changes the journal mode
// or any other setting of the app's database, or leaves walship as the default VFS unless it
// already was (WALSHIP_DEFAULT=1).
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');

const PLATFORM = `${process.platform}-${process.arch}`;
const PREBUILDS = path.join(__dirname, 'prebuilds');
const EXTENSION = path.join(PREBUILDS, PLATFORM, 'libwalvfs.so');

/** The extension for this platform; throws, naming the platform, if the package has none. */
function extensionPath() {
  if (fs.existsSync(EXTENSION)) return EXTENSION;
  let have = [];
  try {
    have = fs.readdirSync(PREBUILDS).filter((d) => fs.existsSync(path.join(PREBUILDS, d, 'libwalvfs.so')));
  } catch (_) { /* no prebuilds/ at all */ }
  throw new Error(
    `walship: no prebuilt extension for ${PLATFORM} in this package (looked for ${EXTENSION}; `
    + `it has: ${have.length ? have.join(', ') : 'none'}). Build one on a ${PLATFORM} machine: `
    + '`make build` in the walship repository, then `npm pack` in packages/npm.',
  );
}

/** better-sqlite3 as the app sees it (one copy of SQLite per copy of the addon), else ours. */
function betterSqlite3() {
  const bases = [];
  if (require.main && require.main.path) bases.push(require.main.path);
  bases.push(__dirname, process.cwd());
  for (const base of bases) {
    let resolved;
    try {
      resolved = require.resolve('better-sqlite3', { paths: [base] });
    } catch (_) {
      continue;
    }
    return require(resolved);
  }
  throw new Error('walship: better-sqlite3 is not installed: npm install better-sqlite3');
}

// Per better-sqlite3 class (each copy of the addon has its own SQLite): the connection the
// extension was loaded through, kept to call walship_default on.
const loaders = new Map();
// Whether walship is the default VFS. The extension makes it the default at load only with
// WALSHIP_DEFAULT=1, and walship_default() returns the new setting, not the old one, so the
// package keeps track itself (a direct `select walship_default(..)` by the app bypasses this).
let walshipIsDefault = process.env.WALSHIP_DEFAULT === '1';

function loader(Database) {
  let db = loaders.get(Database);
  if (!db) {
    db = new Database(':memory:');
    db.loadExtension(extensionPath());
    loaders.set(Database, db);
  }
  return db;
}

function setDefault(Database, on) {
  loader(Database).prepare('select walship_default(?)').pluck().get(on ? 1 : 0);
  walshipIsDefault = on;
}

/** Loads the extension into the SQLite that `db` (a better-sqlite3 Database) runs on. */
function load(db) {
  db.loadExtension(extensionPath());
}

/**
 * `new Database(filename, options)`, opened through walship. Other databases, opened before or
 * after, keep the VFS they had.
 */
function open(filename, options) {
  const Database = betterSqlite3();
  loader(Database);
  const wasDefault = walshipIsDefault;
  if (!wasDefault) setDefault(Database, true);
  let db;
  try {
    db = new Database(filename, options);
  } finally {
    if (!wasDefault) setDefault(Database, false);
  }
  if (!db.memory && !('path' in status(db))) {
    db.close();
    throw new Error(`walship: ${db.name} was opened, but not through the walship VFS`);
  }
  return db;
}

/** Waits until everything `db` committed is in its replica; returns the replica TXID. */
function flush(db, timeoutMs = 30000) {
  return db.prepare('select walship_flush(?)').pluck().get(timeoutMs);
}

/** walship_status() as an object. */
function status(db) {
  return JSON.parse(db.prepare('select walship_status()').pluck().get());
}

// flushOnExit: the databases to flush and close, and one listener per signal for all of them.
const onExit = { dbs: new Map(), listeners: new Map(), exit: true, done: false };

function handleSignal(signal) {
  if (onExit.done) return;
  onExit.done = true;
  for (const [db, timeoutMs] of onExit.dbs) {
    if (!db.open) continue;
    try {
      flush(db, timeoutMs);
    } catch (e) {
      console.error(`walship: ${signal}: ${db.name}: ${e.message}`);
    }
    try {
      db.close();
    } catch (e) {
      console.error(`walship: ${signal}: closing ${db.name}: ${e.message}`);
    }
  }
  onExit.dbs.clear();
  for (const [s, listener] of onExit.listeners) process.removeListener(s, listener);
  onExit.listeners.clear();
  if (!onExit.exit) return;
  if (process.listenerCount(signal) === 0) {
    // Die of the signal, as the process would have without us (systemd and PM2 see a clean stop).
    process.kill(process.pid, signal);
  } else {
    // The app has listeners of its own, which would catch a re-sent signal.
    process.exit(128 + (os.constants.signals[signal] || 0));
  }
}

/**
 * On SIGTERM or SIGINT: walship_flush(timeoutMs) on `db` (and every other database registered
 * here), close them, then exit. Returns a function that unregisters `db`.
 */
function flushOnExit(db, options = {}) {
  const { timeoutMs = 30000, signals = ['SIGTERM', 'SIGINT'], exit = true } = options;
  onExit.dbs.set(db, timeoutMs);
  onExit.exit = exit;
  onExit.done = false;
  for (const signal of signals) {
    if (onExit.listeners.has(signal)) continue;
    const listener = () => handleSignal(signal);
    onExit.listeners.set(signal, listener);
    process.on(signal, listener);
  }
  return () => onExit.dbs.delete(db);
}

module.exports = { open, load, flush, status, flushOnExit, platform: PLATFORM };
Object.defineProperty(module.exports, 'extensionPath', { enumerable: true, get: extensionPath });
