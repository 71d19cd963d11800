#!/usr/bin/env bash
# The main job in one go: replicate a database written through the extension by the sqlite3
# shell, then restore it with `walship restore` and compare.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
demo="$root/demo"
rm -rf "$demo" && mkdir -p "$demo"
cd "$demo"
cp "$root/target/release/libwalvfs.so" .

cat > litestream.yml <<YML
dbs:
  - path: ./app.db
    replica:
      type: file
      path: ./replica
      sync-interval: 1s
YML

echo "== writing app.db through the walship VFS (sqlite3 $(sqlite3 --version | cut -d' ' -f1))"
sqlite3 <<'SQL'
.load ./libwalvfs
.open file:app.db?vfs=walship
PRAGMA journal_mode=WAL;
CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT, amount REAL, note BLOB);
INSERT INTO orders(customer, amount, note)
  SELECT 'customer-' || (value % 97), value * 1.5, randomblob(value % 500) FROM generate_series(1, 5000);
UPDATE orders SET amount = amount * 2 WHERE id % 10 = 0;
DELETE FROM orders WHERE id % 13 = 0;
SELECT 'replicated up to TXID ' || walship_flush(10000);
SQL

echo "== a second session: reopen (the replica is current, so no new snapshot) and write more"
sqlite3 <<'SQL'
.load ./libwalvfs
.open file:app.db?vfs=walship
INSERT INTO orders(customer, amount) SELECT 'late-' || value, value FROM generate_series(1, 300);
SELECT 'replicated up to TXID ' || walship_flush(10000);
SQL

echo "== replica files"
"$root/target/release/walship" ltx ./app.db
echo "== restoring with walship restore"
"$root/target/release/walship" restore -config litestream.yml -o restored.db ./app.db

q="SELECT count(*) || ' rows, total ' || printf('%.1f', sum(amount)) || ', integrity ' || (SELECT integrity_check FROM pragma_integrity_check) FROM orders"
src=$(sqlite3 app.db "$q")
dst=$(sqlite3 restored.db "$q")
echo "source:   $src"
echo "restored: $dst"
[ "$src" = "$dst" ] && echo "OK: the restored database matches the source" || { echo "MISMATCH"; exit 1; }
