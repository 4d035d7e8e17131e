"""The store's PostgreSQL connection (psycopg 3), shaped like the sqlite3 one the store uses.

The store's SQL is written once, for SQLite: `?` parameters, and a column named `user`. Here
`?` becomes psycopg's `%s`, and `user` (a reserved word in PostgreSQL, where a bare `user` is
the session's role name) is quoted. Like SQLite's, this connection is used from the store's one
thread only. A failed statement rolls its transaction back, so the next one starts clean.
"""
from __future__ import annotations

import re
from typing import Any

from engine.errors import BackendMissing

_USER = re.compile(r'(?<!["\'\w.])user(?![\w"\'(])')


def translate(sql: str, with_params: bool = True) -> str:
    if with_params:
        sql = sql.replace("%", "%%").replace("?", "%s")
    return _USER.sub('"user"', sql)


class PgConnection:
    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError:
            raise BackendMissing("psycopg", "postgres") from None
        self._conn = psycopg.connect(url, autocommit=False)

    def execute(self, sql: str, params: tuple | list = ()) -> Any:
        cur = self._conn.cursor()
        try:
            cur.execute(translate(sql, bool(params)), tuple(params) if params else None)
        except Exception:
            self._conn.rollback()
            raise
        return cur

    def commit(self) -> None:
        self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()

    def close(self) -> None:
        self._conn.close()
