"""A real redis-server on loopback for the scale-out tests (skipped, saying why, without one)."""
from __future__ import annotations

import itertools
import shutil
import subprocess

import pytest

from tests.conftest import free_port

_dbs = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server():
    from tests.scaleout.servers import RedisMissing
    from tests.scaleout.servers import redis_server as serve
    try:
        with serve() as url:
            yield url
    except RedisMissing as e:
        pytest.skip(str(e))


@pytest.fixture
def redis_url(redis_server) -> str:
    """A database of its own for each test."""
    return f"{redis_server}/{next(_dbs) % 64}"


# -- PostgreSQL ---------------------------------------------------------------------------------

def _pg_bin(name: str) -> str | None:
    import glob
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster on loopback (trust auth, no fsync), as the postgres user
    when the tests run as root (PostgreSQL refuses to run as root)."""
    import os
    import tempfile
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; `make system-deps`)")
    as_user: list[str] = []
    folder = tempfile.mkdtemp(prefix="confab-pg-")
    if os.geteuid() == 0:
        import pwd
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(folder, "data"), free_port()
    run = lambda *cmd, **kw: subprocess.run([*as_user, *cmd], check=True, capture_output=True,  # noqa: E731
                                            timeout=kw.pop("timeout", 60), **kw)
    try:
        run(initdb, "-D", data, "-A", "trust", "-U", "confab", "--no-sync", "-E", "UTF8")
        run(pg_ctl, "-D", data, "-l", os.path.join(folder, "log"), "-w", "-t", "30", "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off", "start")
    except subprocess.CalledProcessError as e:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {e.stderr.decode(errors='replace')}") from None
    try:
        yield f"postgresql://confab@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database_url(postgres_server) -> str:
    """A new, empty database for each test."""
    psycopg = pytest.importorskip("psycopg")
    name = f"confab_test_{next(_dbs)}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return f"{postgres_server}/{name}"
