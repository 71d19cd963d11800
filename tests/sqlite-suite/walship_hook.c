/*
** walship_hook.c — makes walship the default VFS of SQLite's own `testfixture`.
**
** Compiled into the walship testfixture only (tests/sqlite-suite/build.sh):
**
**     make testfixture OPTS=-DSQLITE_EXTRA_INIT=walship_suite_init LIBS="walship_hook.o -ldl"
**
** SQLite calls SQLITE_EXTRA_INIT at the end of every sqlite3_initialize() that actually
** initialised the library: once at startup, and again after each sqlite3_shutdown() a test makes.
** By then the library is marked initialised, so the connection opened below does not recurse into
** sqlite3_initialize.
**
** What the hook does:
** 1. The first time: dlopen()s the extension (path in $WALSHIP_EXT, else the path compiled in as
**    WALSHIP_EXT_DEFAULT) and runs its entry point sqlite3_walvfs_init the way
**    c_shim/walship_static.c does: as a one-shot automatic extension of a throwaway :memory:
**    connection, because SQLite hands its routine table (which the extension needs; it links no
**    SQLite) only to extensions it loads. The entry point registers the `walship` VFS over the
**    default VFS of that moment (the real `unix`) and installs walship's SQL functions as an
**    automatic extension. sqlite3_shutdown() drops automatic extensions and walship installs
**    its own only once, so after a test's sqlite3_shutdown() the SQL functions are no longer
**    added to new connections (the VFS stays: SQLite never forgets a registered VFS).
** 2. Every time: registers, as the default VFS, a copy of walship's sqlite3_vfs struct named
**    "unix". The copy behaves exactly like `walship` (same methods; the shim finds the real VFS
**    through pAppData, not through its name), but tests that look at the default VFS's name
**    (syscall.test, mmap2.test, ...) run instead of skipping. sqlite3_os_init() registers the
**    real `unix` as default again on every initialisation, which is why this step repeats.
**    The real `unix` is then unregistered (the shim keeps its pointer in pAppData and needs no
**    lookup by name): two VFSes with one name would break tests that unregister and re-register
**    every VFS and check sqlite3_vfs_find(name) after each step (vfs_unlink_test, run by
**    finish_test, asserts this in builds with SQLITE_DEBUG).
**
** Anything that goes wrong here aborts the process with a message on stderr: a testfixture that
** silently ran on the plain unix VFS would report walship's results as passes.
*/
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sqlite3.h"

#ifndef WALSHIP_EXT_DEFAULT
#define WALSHIP_EXT_DEFAULT "target/release/libwalvfs.so"
#endif

typedef int (*walship_entry_fn)(sqlite3 *, char **, const sqlite3_api_routines *);

static walship_entry_fn walship_entry;
static sqlite3_vfs walship_as_unix; /* the copy named "unix" */
static int walship_as_unix_ready;

static void walship_hook_die(const char *what, const char *detail) {
  fprintf(stderr, "walship suite hook: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
  fflush(stderr);
  _exit(70);
}

/* The extension's entry point, run once as an automatic extension. It answers
** SQLITE_OK_LOAD_PERMANENTLY (for sqlite3_load_extension); as an automatic extension any
** non-zero answer fails the open. */
static int walship_hook_entry(sqlite3 *db, char **pzErr, const sqlite3_api_routines *pApi) {
  int rc;
  if (pApi == NULL) {
    *pzErr = sqlite3_mprintf("this SQLite was built with SQLITE_OMIT_LOAD_EXTENSION");
    return SQLITE_ERROR;
  }
  rc = walship_entry(db, pzErr, pApi);
  return rc == SQLITE_OK_LOAD_PERMANENTLY ? SQLITE_OK : rc;
}

static void walship_hook_load(void) {
  const char *path = getenv("WALSHIP_EXT");
  void *h;
  if (path == NULL || path[0] == 0) path = WALSHIP_EXT_DEFAULT;
  h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) walship_hook_die("cannot load the extension", dlerror());
  *(void **)(&walship_entry) = dlsym(h, "sqlite3_walvfs_init");
  if (walship_entry == NULL) walship_hook_die("no sqlite3_walvfs_init in", path);
}

int walship_suite_init(const char *unused) {
  sqlite3_vfs *w;
  int rc;
  (void)unused;
  w = sqlite3_vfs_find("walship");
  if (w == NULL) {
    sqlite3 *db = NULL;
    if (walship_entry == NULL) walship_hook_load();
    rc = sqlite3_auto_extension((void (*)(void))walship_hook_entry);
    if (rc != SQLITE_OK) walship_hook_die("sqlite3_auto_extension failed", sqlite3_errstr(rc));
    rc = sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
      walship_hook_die("registering walship failed", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    }
    sqlite3_close(db);
    sqlite3_cancel_auto_extension((void (*)(void))walship_hook_entry);
    w = sqlite3_vfs_find("walship");
    if (w == NULL) walship_hook_die("the extension did not register the walship VFS", NULL);
  }
  if (!walship_as_unix_ready) {
    if (w->pAppData == NULL || strcmp(((sqlite3_vfs *)w->pAppData)->zName, "unix") != 0) {
      walship_hook_die("walship does not wrap the real unix VFS", NULL);
    }
    walship_as_unix = *w;
    walship_as_unix.zName = "unix";
    walship_as_unix.pNext = NULL;
    walship_as_unix_ready = 1;
  }
  rc = sqlite3_vfs_register(&walship_as_unix, 1);
  if (rc != SQLITE_OK) walship_hook_die("sqlite3_vfs_register failed", sqlite3_errstr(rc));
  rc = sqlite3_vfs_unregister((sqlite3_vfs *)walship_as_unix.pAppData);
  if (rc != SQLITE_OK) walship_hook_die("sqlite3_vfs_unregister(real unix) failed", sqlite3_errstr(rc));
  if (sqlite3_vfs_find("unix") != &walship_as_unix || sqlite3_vfs_find(NULL) != &walship_as_unix) {
    walship_hook_die("the default VFS is not walship's copy named unix", NULL);
  }
  return SQLITE_OK;
}
