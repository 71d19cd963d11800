"""The content digest the torture driver logs and the harness recomputes: the sum, modulo 2^64,
of a hash of each row (id, value). Order-independent, so the driver keeps it per row as it writes
and the harness computes it from any restored database with one scan."""
import hashlib

MOD = 1 << 64


def row_hash(i: int, v: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(i.to_bytes(8, "little") + v, digest_size=8).digest(), "little")


def digest_of(rows: dict) -> str:
    return f"{sum(rows.values()) % MOD:016x}-{len(rows)}"


def table_digest(con) -> dict:
    return {i: row_hash(i, bytes(v)) for i, v in con.execute("SELECT id, v FROM t")}
