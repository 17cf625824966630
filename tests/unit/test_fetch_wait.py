"""The worker consumer's fetch wait: long while every partition is in the fetch, short otherwise."""

from types import SimpleNamespace

from pipelines.faust_transport import FETCH_MAX_WAIT_MS, wait_long_when_idle


class Assignment:
    def __init__(self, paused: set[str]) -> None:
        self.tps = ["samples-0", "samples-1", "leader-0"]
        self._paused = paused

    def state_value(self, tp: str) -> SimpleNamespace:
        return SimpleNamespace(paused=tp in self._paused)


class Fetcher:
    """The two attributes aiokafka's Fetcher has that the wait reads and sets, and the planning call."""

    def __init__(self) -> None:
        self._records: dict[str, object] = {}
        self._fetch_max_wait_ms = 1500
        self.waits_seen: list[int] = []

    def _get_actions_per_node(self, assignment):
        self.waits_seen.append(self._fetch_max_wait_ms)
        return ("requests", assignment)


def test_nothing_buffered_waits_long_and_buffered_or_paused_waits_short() -> None:
    fetcher = Fetcher()
    wait_long_when_idle(fetcher, idle_ms=1000)
    assert fetcher._get_actions_per_node(Assignment(set()))[0] == "requests"  # the plan itself is unchanged
    fetcher._records["samples-0"] = object()  # records not yet consumed: the fetch leaves samples-0 out
    fetcher._get_actions_per_node(Assignment(set()))
    fetcher._records.clear()
    fetcher._get_actions_per_node(Assignment({"samples-1"}))  # paused: left out too
    fetcher._get_actions_per_node(Assignment(set()))
    assert fetcher.waits_seen == [1000, FETCH_MAX_WAIT_MS, FETCH_MAX_WAIT_MS, 1000]


def test_aiokafkas_fetcher_still_has_what_the_wait_relies_on() -> None:
    """An aiokafka upgrade that renames these would silently bring back the fixed wait."""
    import inspect

    from aiokafka.consumer.fetcher import Fetcher as AiokafkaFetcher

    source = inspect.getsource(AiokafkaFetcher)
    assert callable(AiokafkaFetcher._get_actions_per_node)
    assert "self._get_actions_per_node(assignment)" in source
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in source and "self._records = " in source
    assert "self._fetch_max_wait_ms," in source  # read when the FetchRequest is built
