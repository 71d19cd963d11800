/*
** smoke.c — the walship extension driven from C through the plain SQLite C API.
**
** Default build (system libsqlite3, extension loaded at run time):
**     gcc c_shim/smoke.c -lsqlite3 -o smoke
**     ./smoke target/release/libwalvfs.so DB REPLICA_DIR COPY_DIR
** Static build (SQLite linked in, walship registered by c_shim/walship_static.c, no load_extension):
**     gcc -DWALSHIP_STATIC -Ic_shim c_shim/smoke.c c_shim/walship_static.c "$(gcc -print-file-name=libsqlite3.a)" \
**         -Ltarget/release -lwalvfs -Wl,-rpath,$PWD/target/release -lm -lz -ldl -lpthread -o smoke-static
**     ./smoke-static - DB REPLICA_DIR COPY_DIR
**
** Opens DB through the `walship` VFS, switches it to WAL, writes 2000 rows in 50 transactions
** (every tenth row with a blob of a few KB; the same rows as tests/python/test_hosts.py
** expected_rows()), calls walship_flush(10000) after transaction 25 and at the end, copies
** REPLICA_DIR to COPY_DIR when the final flush returns (what was durable at that moment, before
** close), checks the results itself (exit status 1 and a message on
** stderr when one is wrong) and prints one JSON line for the test to check again.
** Run by tests/python/test_hosts.py; needs WALSHIP_CONFIG to name DB.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#ifdef WALSHIP_STATIC
#include "walship_static.h"
#endif

#define TXNS 50
#define ROWS_PER_TXN 40

static void die(const char *what, sqlite3 *db) {
  fprintf(stderr, "smoke: %s: %s\n", what, db ? sqlite3_errmsg(db) : "(no connection)");
  exit(1);
}

static void check(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "smoke: check failed: %s\n", what);
    exit(1);
  }
}

static void exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "smoke: %s: %s\n", sql, err ? err : "?");
    exit(1);
  }
}

/* Runs a one-row query; the statement is left on its first row for the caller to read. */
static sqlite3_stmt *row(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) die(sql, db);
  if (sqlite3_step(st) != SQLITE_ROW) die(sql, db);
  return st;
}

static void copy_tree(const char *from, const char *to) {
  pid_t pid = fork();
  int status = 0;
  if (pid < 0) check(0, "fork");
  if (pid == 0) {
    execlp("cp", "cp", "-r", from, to, (char *)NULL);
    _exit(127);
  }
  check(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0, "cp -r replica copy");
}

/* Prints s as a JSON string. */
static void json_str(const char *s) {
  putchar('"');
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') printf("\\%c", *s);
    else if ((unsigned char)*s < 0x20) printf("\\u%04x", *s);
    else putchar(*s);
  }
  putchar('"');
}

int main(int argc, char **argv) {
  sqlite3 *loader = NULL, *db = NULL;
  sqlite3_stmt *st;
  char *err = NULL;
  unsigned char *blob;
  long long rows, blob_bytes, txid, txid_mid = 0;
  char journal_mode[16], status[4096], memory_flush_error[512];
  int rc;

  if (argc != 5) {
    fprintf(stderr, "usage: %s EXT DB REPLICA_DIR COPY_DIR\n", argv[0]);
    return 2;
  }
  const char *ext = argv[1], *path = argv[2], *replica = argv[3], *copy = argv[4];

  check(sqlite3_vfs_find("walship") == NULL, "no walship VFS before loading");
#ifdef WALSHIP_STATIC
  (void)ext;
  if (walship_static_register(&err) != SQLITE_OK) {
    fprintf(stderr, "smoke: walship_static_register: %s\n", err ? err : "?");
    return 1;
  }
  check(walship_static_register(NULL) == SQLITE_OK, "walship_static_register is idempotent");
  if (sqlite3_open(":memory:", &loader) != SQLITE_OK) die("open :memory:", loader);
#else
  if (sqlite3_open(":memory:", &loader) != SQLITE_OK) die("open :memory:", loader);
  if (sqlite3_enable_load_extension(loader, 1) != SQLITE_OK) die("enable_load_extension", loader);
  if (sqlite3_load_extension(loader, ext, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "smoke: load_extension(%s): %s\n", ext, err ? err : "?");
    return 1;
  }
  sqlite3_enable_load_extension(loader, 0);
#endif
  check(sqlite3_vfs_find("walship") != NULL, "walship VFS registered after loading");
  check(sqlite3_vfs_find(NULL) != sqlite3_vfs_find("walship"), "walship is not the default VFS unless asked");

  /* A connection that is not walship's: walship_flush must refuse, not hang or succeed. */
  memory_flush_error[0] = 0;
  {
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(loader, "SELECT walship_flush(100)", -1, &q, NULL) != SQLITE_OK) die("prepare flush on :memory:", loader);
    check(sqlite3_step(q) == SQLITE_ERROR, "walship_flush on an in-memory connection is an error");
    snprintf(memory_flush_error, sizeof memory_flush_error, "%s", sqlite3_errmsg(loader));
    sqlite3_finalize(q);
  }

  rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "walship");
  if (rc != SQLITE_OK) die("open through walship", db);

  st = row(db, "PRAGMA journal_mode=WAL");
  snprintf(journal_mode, sizeof journal_mode, "%s", (const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  check(strcmp(journal_mode, "wal") == 0, "journal_mode is wal");

  exec(db, "CREATE TABLE items(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, label TEXT NOT NULL, payload BLOB)");
  if (sqlite3_prepare_v2(db, "INSERT INTO items(id, n, label, payload) VALUES (?, ?, ?, ?)", -1, &st, NULL) != SQLITE_OK)
    die("prepare insert", db);
  blob = malloc(4000);
  check(blob != NULL, "malloc");
  for (int t = 0; t < TXNS; t++) {
    exec(db, "BEGIN");
    for (int k = 0; k < ROWS_PER_TXN; k++) {
      long long i = (long long)t * ROWS_PER_TXN + k;
      int len = i % 10 == 0 ? 3000 + (int)(i % 7) * 100 : 32;
      char label[32];
      for (int j = 0; j < len; j++) blob[j] = (unsigned char)((i * 31 + j * 7) & 0xff);
      snprintf(label, sizeof label, "row-%lld", i);
      sqlite3_bind_int64(st, 1, i + 1);
      sqlite3_bind_int64(st, 2, (i * i) % 1000003);
      sqlite3_bind_text(st, 3, label, -1, SQLITE_TRANSIENT);
      sqlite3_bind_blob(st, 4, blob, len, SQLITE_TRANSIENT);
      if (sqlite3_step(st) != SQLITE_DONE) die("insert", db);
      sqlite3_reset(st);
    }
    exec(db, "COMMIT");
    if (t == TXNS / 2 - 1) {
      sqlite3_stmt *q = row(db, "SELECT walship_flush(10000)");
      check(sqlite3_column_type(q, 0) == SQLITE_INTEGER, "mid-run walship_flush returns an integer");
      txid_mid = sqlite3_column_int64(q, 0);
      sqlite3_finalize(q);
      check(txid_mid >= 1, "mid-run walship_flush TXID >= 1");
    }
  }
  sqlite3_finalize(st);
  free(blob);

  st = row(db, "SELECT count(*), sum(length(payload)) FROM items");
  rows = sqlite3_column_int64(st, 0);
  blob_bytes = sqlite3_column_int64(st, 1);
  sqlite3_finalize(st);
  check(rows == TXNS * ROWS_PER_TXN, "2000 rows");

  st = row(db, "SELECT walship_flush(10000)");
  check(sqlite3_column_type(st, 0) == SQLITE_INTEGER, "walship_flush returns an integer");
  txid = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  check(txid > txid_mid, "the final walship_flush TXID is past the mid-run one");
  copy_tree(replica, copy);

  st = row(db, "SELECT walship_status()");
  snprintf(status, sizeof status, "%s", (const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  check(strstr(status, "\"replicated\":true") != NULL, "walship_status says replicated");

  if (sqlite3_close(db) != SQLITE_OK) die("close", db);
  sqlite3_close(loader);

  printf("{\"host\":");
  json_str(
#ifdef WALSHIP_STATIC
      "c-static"
#else
      "c"
#endif
  );
  printf(",\"sqlite_version\":");
  json_str(sqlite3_libversion());
  printf(",\"journal_mode\":");
  json_str(journal_mode);
  printf(",\"rows\":%lld,\"blob_bytes\":%lld,\"txid_mid\":%lld,\"txid\":%lld,\"status\":", rows, blob_bytes, txid_mid, txid);
  json_str(status);
  printf(",\"memory_flush_error\":");
  json_str(memory_flush_error);
  printf("}\n");
  return 0;
}
