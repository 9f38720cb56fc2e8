"""Faust's and aiokafka's private API is used in `agents/private_api.py` only
(not elsewhere in agents/ nor in devtools/), and only with the versions it was tested against."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path
from typing import Any

import pytest

from agents import private_api
from agents.private_api import TESTED, UntestedVersion, check_versions

AGENTS = Path(__file__).resolve().parents[2] / "agents"
DEVTOOLS = AGENTS.parent / "devtools"
PRIVATE_MODULE = AGENTS / "private_api.py"
THIRD_PARTY = ("faust", "aiokafka", "mode")

OWN_PRIVATE_NAMES: set[str] = set()
"""Underscored attributes of our own objects reached from outside `self`/`cls`
(say `other._cache` of a class of ours). None today; a name added here must
not be one of Faust's or aiokafka's."""


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every use of a private name that is not our own."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if not own and node.attr not in OWN_PRIVATE_NAMES:
                found.append((node.lineno, f"{ast.unparse(node)}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            # getattr(consumer, "_client") and the like
            if node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1:
                name = node.args[1]
                if isinstance(name, ast.Constant) and _is_private(str(name.value)):
                    found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
            # table.data[key] = value: a Faust table written past its __setitem__
            target = node.value
            if isinstance(target, ast.Attribute) and target.attr == "data":
                found.append((node.lineno, f"{ast.unparse(node)} = ..."))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in THIRD_PARTY:
            module = str(node.module)
            private = [a.name for a in node.names if _is_private(a.name)]
            if private or any(_is_private(part) for part in module.split(".")):
                found.append((node.lineno, f"from {module} import {private}"))
    return sorted(found)


def test_no_module_but_private_api_uses_faust_or_aiokafka_private_api() -> None:
    sources = sorted(
        p for tree in (AGENTS, DEVTOOLS) for p in tree.rglob("*.py") if p != PRIVATE_MODULE
    )
    assert len(sources) > 20  # the walk found agents/ and devtools/
    found = [
        f"{path.relative_to(AGENTS.parent)}:{line}: {what}"
        for path in sources
        for line, what in _uses(ast.parse(path.read_text(), str(path)))
    ]
    assert found == [], "private API outside agents/private_api.py (move it there):\n" + "\n".join(
        found
    )


def test_the_check_sees_what_it_looks_for() -> None:
    code = """
client = consumer._client
ok = self._state, cls._registry
getattr(worker, "_on_sigint")()
table.data[key] = value
from aiokafka.util import _private
from faust.transport._cython import thing
"""
    found = [what for _, what in _uses(ast.parse(code))]
    assert found == [
        "consumer._client",
        "getattr(worker, '_on_sigint')",
        "table.data[key] = ...",
        "from aiokafka.util import ['_private']",
        "from faust.transport._cython import []",
    ]


def test_private_api_itself_uses_private_api() -> None:
    """Else the rule above tests nothing (the module moved or was renamed)."""
    assert len(_uses(ast.parse(PRIVATE_MODULE.read_text()))) >= 8


# ------------------------------------------------------------ version check


def _versions(**overrides: str) -> dict[str, str]:
    versions = {p: importlib.metadata.version(p) for p in TESTED}
    return {**versions, **{k.replace("_", "-"): v for k, v in overrides.items()}}


def _lookup(versions: dict[str, str]):  # type: ignore[no-untyped-def]
    def version(package: str) -> str:
        if package not in versions:
            raise importlib.metadata.PackageNotFoundError(package)
        return versions[package]

    return version


def test_the_installed_versions_are_the_tested_ones() -> None:
    check_versions()
    check_versions(_lookup(_versions()))


@pytest.mark.parametrize(
    "overrides",
    [{"faust_streaming": "0.15.99"}, {"aiokafka": "0.14.1"}, {"aiokafka": "0.14.0rc1"}],
)
def test_a_patch_release_passes(overrides: dict[str, str]) -> None:
    check_versions(_lookup(_versions(**overrides)))


@pytest.mark.parametrize(
    ("package", "installed", "expected"),
    [
        ("faust-streaming", "0.16.0", "faust-streaming>=0.15,<0.16"),
        ("faust-streaming", "0.14.2", "faust-streaming>=0.15,<0.16"),
        ("aiokafka", "0.13.0", "aiokafka>=0.14,<0.15"),
        ("aiokafka", "1.14.0", "aiokafka>=0.14,<0.15"),
        ("aiokafka", "nightly", "aiokafka>=0.14,<0.15"),
    ],
)
def test_another_minor_version_fails_in_one_line(
    package: str, installed: str, expected: str
) -> None:
    with pytest.raises(UntestedVersion) as raised:
        check_versions(_lookup({**_versions(), package: installed}))
    message = str(raised.value)
    assert "\n" not in message
    assert f"{package} {installed} is installed" in message
    assert expected in message
    assert isinstance(raised.value, ImportError)  # raised while agents are imported


def test_a_missing_package_fails_too() -> None:
    versions = _versions()
    del versions["aiokafka"]
    with pytest.raises(UntestedVersion, match="aiokafka none is installed"):
        check_versions(_lookup(versions))


# ------------------------------------------- what private_api reaches into


def test_the_private_names_used_exist_in_the_installed_versions() -> None:
    """Fails first when a patch release renames what `private_api` reaches into."""
    from aiokafka import AIOKafkaClient
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    from mode import Worker

    assert callable(AIOKafkaConsumerThread._highwaters)
    assert callable(AIOKafkaConsumerThread._ensure_consumer)
    assert callable(AIOKafkaConsumerThread._create_worker_consumer)
    assert callable(Worker._on_sigint)
    assert callable(AIOKafkaClient._wait_on_metadata)
    assert "_committed_offset" in Consumer.__annotations__
    assert private_api.__file__ == str(PRIVATE_MODULE)


def test_consumer_attributes_used_exist() -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def build() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", isolation_level="read_committed")

    consumer = asyncio.run(build())  # never started: no connection is made
    assert private_api.reads_committed(consumer) is True
    assert private_api.consumer_client(consumer) is consumer._client
    assert hasattr(consumer, "_fetch_max_wait_ms")
    assert hasattr(consumer, "_coordinator")  # set when it starts


def test_a_range_read_back_lets_the_commit_pass_it() -> None:
    """Offsets Faust read but never handed over have no event to acknowledge:
    without `mark_read_back` the partition's commit stops before them for good."""
    import asyncio

    import faust
    from faust.types import TP

    async def commit_points() -> tuple[int | None, int | None]:
        app = faust.App("t-private-api", broker="kafka://127.0.0.1:1")
        consumer = app.consumer  # never started: no connection is made
        tp = TP("in", 0)
        consumer._committed_offset[tp] = 10
        acked = list(range(20, 26))  # 11..19 were read back, never acknowledged
        consumer._acked[tp] = list(acked)
        before = consumer._new_offset(tp)
        consumer._acked[tp] = list(acked)
        await private_api.mark_read_back(app, "in", 0, 11, 20)
        return before, consumer._new_offset(tp)

    assert asyncio.run(commit_points()) == (None, 26)


def test_an_offset_acknowledged_twice_is_counted_once() -> None:
    """An offset both read back (a gap) and handed over by the consumer after
    all, in either order, or acknowledged twice by Faust itself, is counted
    once: Faust's run of consecutive offsets ends at every repeat, and its
    commit then moved on by one offset a commit."""
    import asyncio

    import faust
    from faust.types import TP, Message

    async def commit_point(case: str, once: bool) -> int | None:
        app = faust.App("t-private-api", broker="kafka://127.0.0.1:1")
        consumer = app.consumer  # never started: no connection is made
        if once:
            private_api.count_acks_once(consumer)
        app.topics._acking_topics.add("in")
        tp = TP("in", 0)
        consumer._committed_offset[tp] = 10

        def hand_over(offsets: range) -> None:
            for offset in offsets:
                consumer.ack(Message("in", 0, offset, 0.0, 0, {}, None, b"", None, tp=tp))

        if case == "read back, then handed over":
            await private_api.mark_read_back(app, "in", 0, 11, 20)
            hand_over(range(11, 26))
        elif case == "handed over, then read back":
            hand_over(range(11, 26))
            await private_api.mark_read_back(app, "in", 0, 11, 20)
        else:  # repeats in Faust's own list, as seen after an assignment
            consumer._acked[tp] = [11, 12, 12, 13, 13, *range(14, 26)]
        return consumer._new_offset(tp)

    cases = ("read back, then handed over", "handed over, then read back", "repeated")
    for case in cases:
        assert asyncio.run(commit_point(case, once=True)) == 26, case
    assert all(asyncio.run(commit_point(case, once=False)) != 26 for case in cases)
    # Faust's commit asks the instance's `_new_offset`, which the wrapper replaces.
    import inspect

    from faust.transport.consumer import Consumer

    assert "self._new_offset(" in inspect.getsource(Consumer._filter_committable_offsets)


def test_a_deleted_row_sends_the_tombstone_faust_sends_to_the_partition_given() -> None:
    """`delete_table_row` writes what `del table[key]` writes (value None, raw),
    to the snapshot's partition, with no event being processed."""
    import asyncio
    import inspect

    import faust
    from faust.tables.table import Table

    assert 'value=None, value_serializer="raw"' in inspect.getsource(Table.on_key_del)

    async def delete() -> tuple[list[tuple[Any, ...]], dict[str, str]]:
        app = faust.App("t-private-api-del", broker="kafka://127.0.0.1:1")
        table = app.Table("rows", default=None, partitions=4, key_type=str, value_type=str)
        sent: list[tuple[Any, ...]] = []

        def send_changelog(*args: Any, **kwargs: Any) -> str:
            sent.append((*args, kwargs))
            return "delivery"

        table.send_changelog = send_changelog  # type: ignore[method-assign]
        table.data["3/r/x/0"] = "kept"
        table.data["3/r/y/0"] = "gone"
        assert private_api.delete_table_row(table, 3, "3/r/y/0") == "delivery"
        assert private_api.delete_table_row(table, 3, "3/r/z/0") == "delivery"  # never there
        return sent, dict(table.data)

    sent, left = asyncio.run(delete())
    assert sent == [
        (3, "3/r/y/0", None, {"value_serializer": "raw"}),
        (3, "3/r/z/0", None, {"value_serializer": "raw"}),
    ]
    assert left == {"3/r/x/0": "kept"}


def test_a_page_streams_its_chunks_on_the_aiohttp_request_faust_hands_it() -> None:
    """Faust's aiohttp driver routes a page on its aiohttp app, so the page's
    request is aiohttp's; `stream_response` answers it a chunk at a time."""
    import asyncio
    import inspect

    from aiohttp import ClientSession, web
    from aiohttp.test_utils import TestServer
    from faust.web.drivers import aiohttp as faust_aiohttp

    assert "self.web_app.router.add_route(method, pattern, async_handler)" in inspect.getsource(
        faust_aiohttp.Web.route
    )
    written: list[bytes] = []

    def chunks() -> Any:
        for i in range(3):
            written.append(b"%d" % i)
            yield b"chunk %d\n" % i

    async def page(request: web.Request) -> web.StreamResponse:
        return await private_api.stream_response(request, chunks(), "text/plain; version=0.0.4")

    async def fetch() -> tuple[int, str, bytes]:
        app = web.Application()
        app.router.add_get("/metrics", page)
        async with (
            TestServer(app, host="127.0.0.1") as server,
            ClientSession() as client,
            client.get(server.make_url("/metrics")) as answer,
        ):
            return answer.status, answer.headers["Content-Type"], await answer.read()

    status, content_type, body = asyncio.run(fetch())
    assert (status, content_type) == (200, "text/plain; version=0.0.4")
    assert body == b"chunk 0\nchunk 1\nchunk 2\n" and written == [b"0", b"1", b"2"]


# ------------------------------------------------- the fetch loop's hand-over


def test_faust_hands_messages_over_as_hand_over_directly_expects() -> None:
    """`hand_over_directly` recognises one call of Faust's fetch loop; if a
    release words it otherwise, the wrapper would quietly stop applying."""
    import inspect

    from faust.transport.consumer import Consumer

    source = inspect.getsource(Consumer._drain_messages)
    assert "await self.wait_first(" in source
    assert "callback(message), self.suspend_flow.wait()" in source


def _with_direct_hand_over(body: Any) -> Any:
    """Run `body(consumer, calls)` on a never-started Faust consumer whose
    `wait_first` is wrapped; `calls` lists the calls that reached Faust's."""
    import asyncio

    import faust

    async def run() -> Any:
        consumer = faust.App("t-hand-over", broker="kafka://127.0.0.1:1").consumer
        faust_wait_first = consumer.wait_first
        calls: list[tuple[Any, ...]] = []

        async def spy(*coros: Any, timeout: Any = None) -> Any:
            calls.append(coros)
            return await faust_wait_first(*coros, timeout=timeout)

        consumer.wait_first = spy
        private_api.hand_over_directly(consumer)
        return await body(consumer, calls)

    return asyncio.run(run())


def test_a_hand_over_that_does_not_wait_makes_no_task() -> None:
    async def body(consumer: Any, calls: list[Any]) -> None:
        async def handing() -> int:
            return 7

        flow = consumer.suspend_flow.wait()
        coro = handing()
        result = await consumer.wait_first(coro, flow)
        assert (result.done, result.results, result.stopped) == ([coro], [7], False)
        assert calls == []  # Faust's wait_first, and its tasks, never ran
        assert flow.cr_frame is None  # closed: no "never awaited" warning

    _with_direct_hand_over(body)


def test_a_hand_over_that_waits_finishes_inside_faust_wait_first() -> None:
    import asyncio

    async def body(consumer: Any, calls: list[Any]) -> None:
        room = asyncio.get_running_loop().create_future()

        async def handing() -> str:
            await asyncio.sleep(0)  # a first step that returns to the loop
            return await room  # a full buffer, until there is room

        asyncio.get_running_loop().call_later(0.01, room.set_result, "put")
        result = await consumer.wait_first(handing(), consumer.suspend_flow.wait())
        assert result.results == ["put"] and not result.stopped
        assert len(calls) == 1

    _with_direct_hand_over(body)


def test_a_rebalance_abandons_a_waiting_hand_over() -> None:
    import asyncio

    async def body(consumer: Any, calls: list[Any]) -> None:
        abandoned = asyncio.Event()

        async def handing() -> None:
            try:
                await asyncio.get_running_loop().create_future()  # never room
            except asyncio.CancelledError:
                abandoned.set()
                raise

        asyncio.get_running_loop().call_later(0.01, consumer.suspend_flow.set)
        result = await consumer.wait_first(handing(), consumer.suspend_flow.wait())
        assert result.results == [True]  # suspend_flow won
        await asyncio.wait_for(abandoned.wait(), 5)
        assert len(calls) == 1

    _with_direct_hand_over(body)


def test_a_failing_hand_over_raises_and_other_waits_go_to_faust() -> None:
    import asyncio

    async def body(consumer: Any, calls: list[Any]) -> None:
        async def failing() -> None:
            raise ValueError("undecodable")

        flow = consumer.suspend_flow.wait()
        with pytest.raises(ValueError, match="undecodable"):
            await consumer.wait_first(failing(), flow)
        assert flow.cr_frame is None and calls == []
        other = asyncio.Event()
        other.set()
        await consumer.wait_first(other.wait(), consumer.suspend_flow.wait(), timeout=1)
        await consumer.wait_first(asyncio.sleep(0), other.wait())
        assert len(calls) == 2  # a timeout, or not suspend_flow: Faust's own

    _with_direct_hand_over(body)
