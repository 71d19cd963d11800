/*
** walship_static.c — see walship_static.h.
**
** How it works: the extension's entry point, sqlite3_walvfs_init, needs SQLite's table of API
** routines, which SQLite hands only to extensions it loads itself. SQLite also hands it to
** *automatic* extensions (sqlite3_auto_extension) when a connection opens, so we register the
** entry point as one, open a throwaway in-memory connection to run it, and cancel it again: the
** entry point registers the VFS process-wide and installs its own automatic extension for the SQL
** functions, so running it once is enough.
*/
#include <stddef.h>
#include <sqlite3.h>

#include "walship_static.h"

/* Exported by libwalvfs.so (src/ffi/mod.rs). */
extern int sqlite3_walvfs_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi);

/* The entry point answers SQLITE_OK_LOAD_PERMANENTLY (meaning "never unload me") to
** sqlite3_load_extension; as an automatic extension any non-zero answer fails the open. */
static int walship_auto_entry(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  int rc;
  if (pApi == NULL) {
    /* SQLite was built with SQLITE_OMIT_LOAD_EXTENSION: it has no routine table to give. */
    *pzErrMsg = sqlite3_mprintf("this SQLite was built with SQLITE_OMIT_LOAD_EXTENSION");
    return SQLITE_ERROR;
  }
  rc = sqlite3_walvfs_init(db, pzErrMsg, pApi);
  return rc == SQLITE_OK_LOAD_PERMANENTLY ? SQLITE_OK : rc;
}

int walship_static_register(char **pzErrMsg) {
  sqlite3 *db = NULL;
  int rc;
  if (pzErrMsg) *pzErrMsg = NULL;
  if (sqlite3_vfs_find("walship") != NULL) return SQLITE_OK;
  rc = sqlite3_auto_extension((void (*)(void))walship_auto_entry);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  if (rc != SQLITE_OK && pzErrMsg) {
    *pzErrMsg = sqlite3_mprintf("walship: %s", db ? sqlite3_errmsg(db) : "out of memory");
  }
  sqlite3_close(db);
  sqlite3_cancel_auto_extension((void (*)(void))walship_auto_entry);
  if (rc == SQLITE_OK && sqlite3_vfs_find("walship") == NULL) {
    rc = SQLITE_ERROR;
    if (pzErrMsg) *pzErrMsg = sqlite3_mprintf("walship: the VFS was not registered");
  }
  return rc;
}
