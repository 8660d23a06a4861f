"""The embedded Redis: durable under its directory (even through kill -9), one server per directory, gone
when the process that started it dies, and a throwaway one leaves nothing behind. Real redis-server."""

import os
import signal
import subprocess
import sys

import psutil
import pytest
import redis

from serving.runtime.embedded_redis import DataDirectoryInUse, EmbeddedRedis


def _gone(pid: int, timeout: float = 10.0) -> bool:
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True


def test_a_write_survives_kill_9_of_redis_and_a_restart_on_the_same_directory(tmp_path):
    server = EmbeddedRedis(tmp_path)
    redis.Redis.from_url(server.url).rpush("rounds", "one", "two")
    os.kill(server.pid, signal.SIGKILL)
    assert _gone(server.pid)
    server.close()  # releases the directory
    with EmbeddedRedis(tmp_path) as again:
        assert redis.Redis.from_url(again.url).lrange("rounds", 0, -1) == [b"one", b"two"]
    assert (tmp_path / "appendonly.aof").stat().st_size > 0


def test_a_crashed_server_restarts_in_place_on_the_same_address_and_data(tmp_path):
    """What the chaos harness does to the store: kill it, bring it back where the service expects it."""
    from tests.serving.dicom.orthanc import free_port

    with EmbeddedRedis(tmp_path, port=free_port()) as server:
        redis.Redis.from_url(server.url).set("session", "kept")
        crashed = server.pid
        server.kill()
        assert _gone(crashed)
        server.restart()
        assert server.pid != crashed and redis.Redis.from_url(server.url).get("session") == b"kept"
        with pytest.raises(RuntimeError, match="kill"):
            server.restart()


def test_a_second_server_on_a_directory_in_use_fails_clearly(tmp_path):
    with EmbeddedRedis(tmp_path), pytest.raises(DataDirectoryInUse, match="in use by another mediround serve"):
        EmbeddedRedis(tmp_path, lock_wait=0.5)


def test_kill_9_of_its_process_takes_redis_with_it_and_keeps_the_data(tmp_path):
    code = ("import sys, time; from serving.runtime.embedded_redis import EmbeddedRedis; "
            "r = EmbeddedRedis(sys.argv[1]); print(r.pid, r.url, flush=True); time.sleep(120)")
    owner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    pid, url = owner.stdout.readline().split()
    redis.Redis.from_url(url).set("session", "kept")
    owner.kill()
    owner.wait()
    assert _gone(int(pid)), "redis-server outlived the process that started it"
    with EmbeddedRedis(tmp_path, lock_wait=0) as again:  # and it let go of the directory
        assert redis.Redis.from_url(again.url).get("session") == b"kept"


def test_a_throwaway_server_removes_its_directory():
    server = EmbeddedRedis()
    redis.Redis.from_url(server.url).set("k", "v")
    assert redis.Redis.from_url(server.url).config_get("appendonly") == {"appendonly": "no"}
    server.close()
    assert not server.directory.exists()


def test_the_data_is_readable_by_its_owner_only(tmp_path):
    directory = tmp_path / "store"
    directory.mkdir(mode=0o755)
    with EmbeddedRedis(directory) as server:
        redis.Redis.from_url(server.url).set("image", b"patient data")
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "appendonly.aof").stat().st_mode & 0o077 == 0
