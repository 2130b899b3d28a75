"""The async Redis client (conversations/clients.py): one ``redis.asyncio`` client per running event loop,
built from the same ``CACHES`` entry as the sync one, on the real Redis and on private servers.

Each test runs its coroutines with plain ``asyncio.run`` (a fresh loop each time, as a management
command, a worker or ``async_to_sync`` would), so no pytest async plugin is involved.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster

from conversations.clients import async_cache_client, async_client_loops, get_async_redis_client
from tests.conftest import REDIS_URL
from tests.redis_server import PrivateRedis
from tests.redis_servers import (
    LocalCluster,
    LocalSentinel,
    local_cluster,  # noqa: F401  (the module-scoped ``cluster`` fixture)
    local_sentinel,  # noqa: F401  (the module-scoped ``topology`` fixture)
)

pytestmark = pytest.mark.redis

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def use_cache(settings: Any, config: dict[str, Any]) -> str:
    """Add ``config`` to CACHES under a fresh alias and make it the store's; returns the alias."""
    alias = f"async-{uuid.uuid4().hex[:8]}"
    settings.CACHES = {**settings.CACHES, alias: config}
    settings.CONVERSATIONS = {**getattr(settings, "CONVERSATIONS", {}), "CACHE_ALIAS": alias}
    return alias


def django_redis(location: Any, **options: Any) -> dict[str, Any]:
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": location,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2, **options},
    }


def normal_clients(admin: redis.Redis) -> int:
    """Client connections the server has open, not counting ``admin``'s own."""
    return len(admin.client_list(_type="normal")) - 1


@pytest.fixture
def servers() -> Iterator[Callable[..., PrivateRedis]]:
    """Start private redis-servers with extra arguments; all are stopped afterwards."""
    started: list[PrivateRedis] = []

    def start(*args: str, unix_socket: bool = False) -> PrivateRedis:
        server = PrivateRedis(*args)
        if unix_socket:
            server.extra_args += ["--unixsocket", str(server.dir / "redis.sock"), "--unixsocketperm", "700"]
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.close()


# ---------------------------------------------------------------- one client per event loop


def test_each_loop_gets_its_own_client_and_forgets_it_when_the_loop_closes(key_prefix: str) -> None:
    baseline = async_client_loops()

    async def use(value: str) -> redis.asyncio.Redis:
        client = async_cache_client("default")
        assert async_cache_client("default") is client  # one pool per loop, reused
        assert async_client_loops() == baseline + 1
        await client.set(f"{key_prefix}:k", value, ex=30)
        assert await client.get(f"{key_prefix}:k") == value.encode()
        return client

    first = run(use("one"))
    assert async_client_loops() == baseline
    second = run(use("two"))  # a second asyncio.run: a client bound to the first loop would fail here
    assert async_client_loops() == baseline
    assert first is not second


def test_threads_each_running_a_loop_get_their_own_clients(key_prefix: str) -> None:
    baseline = async_client_loops()
    both_running = threading.Barrier(2, timeout=10)
    clients: dict[int, Any] = {}
    loops_seen: list[int] = []
    errors: list[BaseException] = []

    async def work(number: int) -> None:
        client = async_cache_client("default")
        clients[number] = client
        await asyncio.to_thread(both_running.wait)  # both loops are alive at once
        loops_seen.append(async_client_loops())
        for i in range(20):
            await client.rpush(f"{key_prefix}:list", f"{number}:{i}")
        assert async_cache_client("default") is client

    def thread(number: int) -> None:
        try:
            run(work(number))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert clients[0] is not clients[1]
    assert min(loops_seen) >= baseline + 2
    assert async_client_loops() == baseline
    check = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    assert check.llen(f"{key_prefix}:list") == 40
    check.close()


def test_async_to_sync_calls_each_get_a_working_client(key_prefix: str) -> None:
    from asgiref.sync import async_to_sync

    baseline = async_client_loops()

    async def incr() -> int:
        return int(await async_cache_client("default").incr(f"{key_prefix}:n"))

    # Outside any loop, every async_to_sync call runs its own loop (in a thread), then closes it.
    assert [async_to_sync(incr)() for _ in range(3)] == [1, 2, 3]
    assert async_client_loops() == baseline


def test_a_loop_closed_without_its_hook_is_forgotten_later(key_prefix: str) -> None:
    baseline = async_client_loops()

    async def ping() -> bool:
        return bool(await async_cache_client("default").ping())

    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(ping())
    type(loop).close(loop)  # closed behind the registry's back (as a loop that cannot be hooked is)
    assert async_client_loops() == baseline + 1
    assert run(ping())  # the next loop's first client sweeps closed loops out
    assert async_client_loops() == baseline


def test_closing_a_loop_closes_its_connections(settings: Any, private_redis: PrivateRedis) -> None:
    use_cache(settings, django_redis(private_redis.url))
    admin = private_redis.admin()
    admin.ping()

    async def use() -> int:
        client = get_async_redis_client()
        await asyncio.gather(*(client.incr("hits") for _ in range(5)))  # several pooled connections
        return normal_clients(admin)

    assert run(use()) >= 1
    assert normal_clients(admin) == 0
    assert admin.get("hits") == b"5"
    admin.close()


def test_outside_a_running_loop_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="needs a running event loop"):
        async_cache_client("default")
    with pytest.raises(RuntimeError, match="needs a running event loop"):
        get_async_redis_client()


def test_a_changed_cache_configuration_gives_a_new_client(settings: Any, servers: Any) -> None:
    one, two = servers(), servers()
    alias = use_cache(settings, django_redis(one.url))

    async def use() -> None:
        await async_cache_client(alias).set("where", "one")
        settings.CACHES[alias] = django_redis(two.url)
        await async_cache_client(alias).set("where", "two")

    run(use())
    assert one.admin().get("where") == b"one"
    assert two.admin().get("where") == b"two"


# ---------------------------------------------------------------- the cache's options


def test_password_from_options_or_the_url(settings: Any, private_redis: PrivateRedis) -> None:
    private_redis.admin().config_set("requirepass", "s3cret")
    port = private_redis.port
    with_option = use_cache(settings, django_redis(private_redis.url, PASSWORD="s3cret"))
    in_url = use_cache(settings, django_redis(f"redis://:s3cret@127.0.0.1:{port}/0"))
    without = use_cache(settings, django_redis(private_redis.url))

    async def use() -> None:
        assert await async_cache_client(with_option).ping() is True
        assert await async_cache_client(in_url).ping() is True
        with pytest.raises(redis.AuthenticationError):
            await async_cache_client(without).ping()

    run(use())


def test_acl_user_from_options_or_the_url(settings: Any, private_redis: PrivateRedis) -> None:
    admin = private_redis.admin()
    admin.acl_setuser("alice", enabled=True, passwords=["+wonderland"], keys=["*"], commands=["+@all"])
    admin.acl_setuser("default", enabled=False)  # nobody gets in without a user
    with_options = use_cache(
        settings, django_redis(private_redis.url, USERNAME="alice", PASSWORD="wonderland")
    )
    in_url = use_cache(settings, django_redis(f"redis://alice:wonderland@127.0.0.1:{private_redis.port}/0"))

    async def whoami(alias: str) -> Any:
        return await async_cache_client(alias).acl_whoami()

    assert run(whoami(with_options)) == "alice"
    assert run(whoami(in_url)) == "alice"


def test_the_database_number_is_selected(settings: Any, private_redis: PrivateRedis) -> None:
    url = f"redis://127.0.0.1:{private_redis.port}"
    django_redis_alias = use_cache(settings, django_redis(f"{url}/5"))
    builtin_alias = use_cache(
        settings,
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"{url}/3", "OPTIONS": {}},
    )

    async def use() -> None:
        await async_cache_client(django_redis_alias).set("db", "five")
        await async_cache_client(builtin_alias).set("db", "three")

    run(use())
    assert private_redis.admin(db=5).get("db") == b"five"
    assert private_redis.admin(db=3).get("db") == b"three"
    assert private_redis.admin(db=0).get("db") is None


def test_a_unix_socket_location(settings: Any, servers: Any) -> None:
    server = servers(unix_socket=True)
    alias = use_cache(settings, django_redis(f"unix://{server.dir / 'redis.sock'}?db=2"))

    async def use() -> Any:
        client = async_cache_client(alias)
        await client.set("via", "socket")
        return (await client.client_info())["addr"]

    address = run(use())
    assert "127.0.0.1" not in address  # not over TCP
    assert server.admin(db=2).get("via") == b"socket"


def test_connection_pool_and_client_kwargs_and_tls_are_applied(settings: Any) -> None:
    alias = use_cache(
        settings,
        django_redis(
            "rediss://127.0.0.1:6390/0",
            CONNECTION_POOL_CLASS="redis.connection.BlockingConnectionPool",
            CONNECTION_POOL_KWARGS={"max_connections": 3, "client_name": "conv-async"},
            REDIS_CLIENT_KWARGS={"single_connection_client": True},
        ),
    )

    async def inspect() -> Any:
        return async_cache_client(alias)

    client = run(inspect())
    pool = client.connection_pool
    assert isinstance(pool, redis.asyncio.BlockingConnectionPool)
    assert pool.max_connections == 3
    assert issubclass(pool.connection_class, redis.asyncio.SSLConnection)
    assert pool.connection_kwargs["client_name"] == "conv-async"
    assert pool.connection_kwargs["socket_timeout"] == 2
    assert client.single_connection_client is True


def test_an_unreachable_redis_raises_redis_connection_error() -> None:
    async def use() -> None:
        with pytest.raises(redis.ConnectionError):
            await async_cache_client("unreachable").ping()

    started = time.monotonic()
    run(use())
    assert time.monotonic() - started < 2


def _command_calls(admin: redis.Redis) -> dict[str, int]:
    stats = admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def test_a_frozen_redis_times_out_once_and_the_command_is_never_sent_again(
    settings: Any, private_redis: PrivateRedis
) -> None:
    timeout = 0.5
    alias = use_cache(
        settings,
        {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": private_redis.url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": timeout, "SOCKET_TIMEOUT": timeout},
        },
    )
    admin = private_redis.admin()

    async def use() -> tuple[float, dict[str, int], int]:
        client = async_cache_client(alias)
        await client.ping()  # the connection is open before Redis freezes
        calls = _command_calls(admin)
        connections = int(admin.info("stats")["total_connections_received"])
        private_redis.stop_signal()  # SIGSTOP: sockets stay open, nothing answers
        started = time.monotonic()
        try:
            with pytest.raises(redis.TimeoutError):
                await client.incr("appended")
        finally:
            elapsed = time.monotonic() - started
            private_redis.continue_signal()
        return elapsed, calls, connections

    elapsed, calls_before, connections_before = run(use())
    assert timeout * 0.8 <= elapsed < timeout + 0.5
    # Redis ran the command it had received while frozen, exactly once: no retry re-sent it, and no
    # new connection was opened to try again (redis-py 6+ would retry 3 times by default).
    assert admin.get("appended") == b"1"
    calls_after = _command_calls(admin)
    sent = {
        name: calls_after[name] - calls_before.get(name, 0)
        for name in calls_after
        if calls_after[name] != calls_before.get(name, 0) and name != "info"
    }
    assert sent == {"incrby": 1, "get": 1}  # redis-py sends INCR as INCRBY; get: the check above
    assert int(admin.info("stats")["total_connections_received"]) == connections_before
    admin.close()


# ---------------------------------------------------------------- every deployment of README "Deployment"


@pytest.mark.slow
def test_sentinel_configuration_reaches_the_primary(settings: Any, topology: LocalSentinel) -> None:
    alias = use_cache(settings, topology.cache_config())  # as tests/test_sentinel.py configures it
    key = f"ct-{uuid.uuid4().hex[:8]}"

    async def use() -> Any:
        client = async_cache_client(alias)
        await client.set(key, "on the primary")
        return (await client.info("replication"))["role"]

    assert run(use()) == "master"
    with redis.Redis(host="127.0.0.1", port=topology.primary_port(), socket_timeout=5) as primary:
        assert primary.get(key) == b"on the primary"


@pytest.mark.slow
def test_cluster_configuration_runs_commands_on_every_slot(settings: Any, cluster: LocalCluster) -> None:
    alias = use_cache(settings, cluster.cache_config())  # as tests/test_cluster.py configures it
    prefix = f"ct-{uuid.uuid4().hex[:8]}"
    keys = [f"{prefix}:{{{i}}}" for i in range(12)]  # twelve hash tags: spread over the slots

    async def use() -> tuple[set[str], list[Any], Any]:
        client = async_cache_client(alias)
        assert isinstance(client, redis.asyncio.cluster.RedisCluster)
        for key in keys:
            await client.set(key, key, ex=60)
        nodes = {client.get_node_from_key(key).name for key in keys}
        values = [await client.get(key) for key in keys]
        script = await client.eval("return redis.call('INCR', KEYS[1])", 1, f"{prefix}:{{n}}")
        await client.delete(*keys[:1], f"{prefix}:{{n}}")
        return nodes, values, script

    nodes, values, script = run(use())
    assert len(nodes) == 3  # every primary answered
    assert values == [key.encode() for key in keys]
    assert script == 1


def test_djangos_redis_cache_gives_a_client_on_its_write_server(
    settings: Any, key_prefix: str, redis_url: str
) -> None:
    alias = use_cache(
        settings,
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            # The first server takes the writes; the second (a read replica) is never used here.
            "LOCATION": f"{redis_url},redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        },
    )

    async def use() -> Any:
        client = async_cache_client(alias)
        await client.set(f"{key_prefix}:builtin", "written", ex=30)
        return client.connection_pool.connection_kwargs["socket_timeout"]

    assert run(use()) == 2
    check = redis.Redis.from_url(redis_url, socket_timeout=5)
    assert check.get(f"{key_prefix}:builtin") == b"written"
    check.close()


# ---------------------------------------------------------------- ASYNC_CLIENT_FACTORY

factory_calls: list[tuple[str, Any]] = []


def make_async_client(alias: str) -> redis.asyncio.Redis:
    """An ASYNC_CLIENT_FACTORY for the test below."""
    client = redis.asyncio.Redis.from_url(REDIS_URL, socket_timeout=2, client_name="conv-factory")
    factory_calls.append((alias, client))
    return client


def test_async_client_factory_is_used_once_per_loop(settings: Any) -> None:
    settings.CONVERSATIONS = {
        **settings.CONVERSATIONS,
        "ASYNC_CLIENT_FACTORY": "tests.test_clients_async.make_async_client",
    }
    factory_calls.clear()

    async def use() -> tuple[Any, Any]:
        client = get_async_redis_client()
        assert get_async_redis_client() is client
        other_alias = get_async_redis_client("unreachable")
        assert other_alias is not client
        return client, await client.client_getname()

    first, name = run(use())
    second, _ = run(use())
    assert name == "conv-factory"
    assert [alias for alias, _ in factory_calls] == ["default", "unreachable", "default", "unreachable"]
    assert [factory_calls[0][1], factory_calls[2][1]] == [first, second]
    assert first is not second


def test_without_a_factory_the_cache_client_is_used(settings: Any) -> None:
    async def same() -> bool:
        return get_async_redis_client() is async_cache_client(
            settings.CONVERSATIONS.get("CACHE_ALIAS", "default")
        )

    assert run(same())
