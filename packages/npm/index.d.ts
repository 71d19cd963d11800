// Types for walship (CommonJS). The Database type is better-sqlite3's (@types/better-sqlite3).
import BetterSqlite3 = require('better-sqlite3');

type Database = BetterSqlite3.Database;

/** Absolute path of libwalvfs.so for this platform; reading it throws if the package has none. */
export declare const extensionPath: string;

/** `${process.platform}-${process.arch}`, the prebuilds/ folder this package looks in. */
export declare const platform: string;

/**
 * `new Database(filename, options)` opened through the walship VFS, so it replicates as
 * litestream.yml (or walship.yml, or $WALSHIP_CONFIG) says. Databases opened any other way keep
 * the VFS they had. Set `PRAGMA journal_mode = WAL` on it as before.
 */
export declare function open(filename?: string | Buffer, options?: BetterSqlite3.Options): Database;

/** Loads the extension into the SQLite that `db` runs on (open() does this for you). */
export declare function load(db: Database): void;

/**
 * Waits until everything `db` committed is durable in its replica and returns the replica's
 * TXID. Throws (better-sqlite3's SqliteError) on timeout, on a storage error, or if `db` is not
 * replicated.
 */
export declare function flush(db: Database, timeoutMs?: number): number;

/** walship_status(): the replica TXID, lag, backlog and last error of `db`. */
export declare function status(db: Database): WalshipStatus;

export interface WalshipStatus {
  path?: string;
  replicated?: boolean;
  txid_int?: number;
  pending_txns?: number;
  last_error?: string | null;
  [key: string]: unknown;
}

export interface FlushOnExitOptions {
  /** Passed to walship_flush for each database; default 30000. */
  timeoutMs?: number;
  /** Default ['SIGTERM', 'SIGINT']. */
  signals?: NodeJS.Signals[];
  /**
   * Default true: after flushing and closing, the process dies of the same signal (or, if the
   * app has signal listeners of its own, exits with 128 + the signal number). false: only flush
   * and close, and leave exiting to the app.
   */
  exit?: boolean;
}

/**
 * On SIGTERM/SIGINT, flush `db` (and every other database given to flushOnExit), close it, then
 * exit, so a deploy or restart loses nothing. Returns a function that unregisters `db`.
 */
export declare function flushOnExit(db: Database, options?: FlushOnExitOptions): () => void;
