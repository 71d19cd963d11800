// walship replicate -exec: what node runs before the app (NODE_OPTIONS=--require, written to the
// run's directory by src/bin/walship/replicate_cmd.rs). The app keeps its plain
// `require('better-sqlite3')` (or `import`); the databases the configuration names open through
// walship, and what they committed is shipped before the process ends.
//
// Owns: the hook on better-sqlite3's `Database` (a Proxy; around the open of a database
// `walship_exec_replicates()` says is configured, walship is the default VFS, as the npm package's
// open() does), the SIGTERM/SIGINT/SIGHUP flush (as flushOnExit does: flush, close, die of the same
// signal) and the flush at 'exit'. Never: touches a database the configuration does not name, or
// any setting of a database; takes over the app's own signal handling (when the app listens for
// the signal itself, it decides when to exit, and walship flushes at 'exit'); throws into the app
// (a failure is said once on stderr and the database opens without walship).
'use strict';

(function walshipPreload() {
  const EXT = process.env.WALSHIP_PRELOAD;
  if (!EXT) return;
  const Module = require('module');
  // The config's shutdown-sync-timeout; 0: do not wait for the replica.
  const flushEnv = Number(process.env.WALSHIP_EXEC_FLUSH_MS);
  const FLUSH_MS = Number.isFinite(flushEnv) && process.env.WALSHIP_EXEC_FLUSH_MS !== '' ? flushEnv : 30000;
  const SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'];
  // better-sqlite3's Database (one per copy of the addon) -> its Proxy, and the Proxies.
  const proxies = new Map();
  const isProxy = new WeakSet();
  // Database -> a ':memory:' connection with walship loaded, or null when loading failed.
  const loaders = new Map();
  // WeakRefs of the databases opened through walship.
  const opened = new Set();
  // The extension makes walship the default VFS at load only with WALSHIP_DEFAULT=1.
  const walshipIsDefault = process.env.WALSHIP_DEFAULT === '1';
  let said = false;

  function say(msg) {
    if (said) return;
    said = true;
    process.stderr.write(`walship: ${msg}\n`);
  }

  function isBetterSqlite3(exp) {
    return typeof exp === 'function' && exp.name === 'Database' && exp.prototype != null
      && typeof exp.prototype.loadExtension === 'function' && typeof exp.prototype.pragma === 'function';
  }

  function loader(Database) {
    if (loaders.has(Database)) return loaders.get(Database);
    let db = null;
    try {
      db = Reflect.construct(Database, [':memory:']);
      db.loadExtension(EXT, 'sqlite3_walship_exec_init');
    } catch (e) {
      say(`cannot load ${EXT} into better-sqlite3 (${e.message}); databases open without walship`);
      try { if (db) db.close(); } catch (_) { /* nothing to close */ }
      db = null;
    }
    loaders.set(Database, db);
    return db;
  }

  /** The loader connection when `filename` is a database the configuration replicates. */
  function replicating(Database, filename) {
    if (typeof filename !== 'string') return null;
    const name = filename.trim();
    if (name === '' || name === ':memory:' || name.startsWith('file:')) return null;
    try {
      const l = loader(Database);
      return l && l.prepare('select walship_exec_replicates(?)').pluck().get(name) === 1 ? l : null;
    } catch (e) {
      say(`${name}: ${e.message}; opened without walship`);
      return null;
    }
  }

  function construct(Database, args, newTarget) {
    const l = replicating(Database, args[0]);
    if (!l) return Reflect.construct(Database, args, newTarget);
    if (!walshipIsDefault) l.prepare('select walship_default(1)').pluck().get();
    let db;
    try {
      db = Reflect.construct(Database, args, newTarget);
    } finally {
      try {
        if (!walshipIsDefault) l.prepare('select walship_default(0)').pluck().get();
      } catch (e) {
        say(`could not switch the default VFS back: ${e.message}`);
      }
    }
    track(db);
    return db;
  }

  function wrap(Database) {
    let proxy = proxies.get(Database);
    if (!proxy) {
      proxy = new Proxy(Database, {
        construct(target, args, newTarget) {
          return construct(target, args, newTarget === proxy ? target : newTarget);
        },
        // better-sqlite3 allows Database(...) without `new`.
        apply(target, _thisArg, args) {
          return construct(target, args, target);
        },
      });
      proxies.set(Database, proxy);
      isProxy.add(proxy);
    }
    return proxy;
  }

  const load = Module._load;
  Module._load = function walshipLoad(request, parent, isMain) {
    const exp = load.apply(this, arguments);
    try {
      if (isProxy.has(exp) || !isBetterSqlite3(exp)) return exp;
      const proxy = wrap(exp);
      // Later requires (and import) read the module cache: give them the Proxy too.
      const cached = Module._cache[Module._resolveFilename(request, parent, isMain)];
      if (cached && cached.exports === exp) cached.exports = proxy;
      return proxy;
    } catch (e) {
      say(`better-sqlite3 not hooked (${e.message}); databases open without walship`);
      return exp;
    }
  };

  // Shipping before the process ends.
  const listeners = new Map();

  function openDatabases() {
    const out = [];
    for (const ref of opened) {
      const db = ref.deref();
      if (db && db.open) out.push(db);
      else opened.delete(ref);
    }
    return out;
  }

  function flush(db, why) {
    if (FLUSH_MS <= 0) return;
    try {
      db.prepare('select walship_flush(?)').pluck().get(FLUSH_MS);
    } catch (e) {
      process.stderr.write(`walship: ${why}: ${db.name}: ${e.message}\n`);
    }
  }

  function onSignal(signal) {
    // The app listens too: it decides when to exit, and 'exit' flushes.
    if (process.listenerCount(signal) > 1) return;
    for (const db of openDatabases()) {
      flush(db, signal);
      try {
        db.close();
      } catch (e) {
        process.stderr.write(`walship: ${signal}: closing ${db.name}: ${e.message}\n`);
      }
    }
    for (const [s, listener] of listeners) process.removeListener(s, listener);
    listeners.clear();
    // Die of the signal, as the app would have without walship.
    process.kill(process.pid, signal);
  }

  function track(db) {
    opened.add(new WeakRef(db));
    if (listeners.size > 0) return;
    for (const signal of SIGNALS) {
      const listener = () => onSignal(signal);
      listeners.set(signal, listener);
      process.on(signal, listener);
    }
    if (!track.exitHook) {
      track.exitHook = true;
      process.on('exit', () => {
        for (const db of openDatabases()) flush(db, 'exit');
      });
    }
  }
}());
