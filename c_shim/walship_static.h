/*
** walship_static.h — register walship in a program that links SQLite statically.
**
** Such a program has no use for sqlite3_load_extension (its SQLite may not even find the .so at
** run time); instead it links libwalvfs.so (`-L<dir> -lwalvfs -Wl,-rpath,<dir>`) next to its own
** SQLite and calls walship_static_register() once, at startup, before opening databases:
**
**     #include "walship_static.h"
**     char *err = 0;
**     if (walship_static_register(&err) != SQLITE_OK) { fprintf(stderr, "%s\n", err); ... }
**     sqlite3_open_v2("app.db", &db, flags, "walship");
**
** Afterwards the `walship` VFS is registered (the default one too if WALSHIP_DEFAULT=1) and
** walship_flush()/walship_status()/walship_default() exist on every connection opened later.
**
** Requirement: the program's SQLite must be built WITHOUT SQLITE_OMIT_LOAD_EXTENSION (the default),
** because that is what makes SQLite hand its routine table to automatic extensions; with the
** option set, registration fails with SQLITE_ERROR and says so.
*/
#ifndef WALSHIP_STATIC_H
#define WALSHIP_STATIC_H

#ifdef __cplusplus
extern "C" {
#endif

/* Registers walship with the SQLite this program is linked with. Idempotent; call it from one
** thread before other threads use SQLite. Returns SQLITE_OK, or an error code and (when pzErrMsg
** is not NULL) a message in *pzErrMsg to be freed with sqlite3_free(). */
int walship_static_register(char **pzErrMsg);

#ifdef __cplusplus
}
#endif

#endif /* WALSHIP_STATIC_H */
