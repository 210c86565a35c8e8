"""Producer and consumers over a multiprocessing Queue: the chapter's `Queue` example, with two consumers.

The chapter's producer ends with one ``None``: "no more items". With two consumers, the first to see
it stops, and the other waits for ever for a second ``None``. Each consumer needs its own end
message — or the producer can wait until every item is processed (``JoinableQueue``: ``task_done`` /
``join``) before telling them to stop. Stopping when ``empty()`` says so is worse than hanging: a
consumer that starts before the first item, or looks between two, leaves, and items are lost.
"""

from harness import Scenario, Trial

scenario = Scenario(
    "producer-consumer",
    "A producer puts `size` items on a multiprocessing Queue; two consumers take them (the chapter's Queue example)",
    size=4,
    stress_only="its actors are processes",
)

CONSUMERS = 2


def producer(queue, count, stops):  # type: ignore[no-untyped-def]
    """The chapter's `producer`: the items, then `stops` end markers."""
    for item in range(count):
        queue.put(item)
    for _ in range(stops):
        queue.put(None)


def consumer(queue):  # type: ignore[no-untyped-def]
    """The chapter's `consumer`: takes items until it sees `None`."""
    taken = []
    while True:
        item = queue.get()  # TAKES HERE
        if item is None:
            break
        taken.append(item)
    return taken


def joining_producer(queue, count, stops):  # type: ignore[no-untyped-def]
    for item in range(count):
        queue.put(item)
    queue.join()  # returns once a consumer called task_done() for every item
    for _ in range(stops):
        queue.put(None)


def joinable_consumer(queue):  # type: ignore[no-untyped-def]
    taken = []
    while True:
        item = queue.get()
        try:
            if item is None:
                return taken
            taken.append(item)
        finally:
            queue.task_done()


def consumer_until_empty(queue):  # type: ignore[no-untyped-def]
    taken = []
    while not queue.empty():  # "nothing left" — or nothing *yet*
        taken.append(queue.get())
    return taken


def _run(trial: Trial, queue, produce, consume, stops: int) -> None:  # type: ignore[no-untyped-def]
    with trial.processes() as group:
        group.start(produce, queue, trial.size, stops, name="producer")
        for index in range(CONSUMERS):
            group.start(consume, queue, name=f"consumer-{index}")
    taken = sorted(item for result in group.results[1:] for item in (result or []) if item is not None)
    trial.check(taken == list(range(trial.size)), f"consumers took {taken} of {list(range(trial.size))}")


@scenario.variant(expect="unsafe")
def one_sentinel(trial: Trial) -> None:
    """One `None` for two consumers: the second one waits for ever."""
    _run(trial, trial.mp.Queue(), producer, consumer, stops=1)


@scenario.variant(expect="safe")
def sentinel_per_consumer(trial: Trial) -> None:
    """One `None` per consumer: each stops at its own."""
    _run(trial, trial.mp.Queue(), producer, consumer, stops=CONSUMERS)


@scenario.variant(expect="safe")
def joinable_queue(trial: Trial) -> None:
    """`JoinableQueue`: the producer waits for `task_done()` of every item, then sends the stops."""
    _run(trial, trial.mp.JoinableQueue(), joining_producer, joinable_consumer, stops=CONSUMERS)


@scenario.variant(expect="unsafe")
def until_empty(trial: Trial) -> None:
    """Consumers stop when `empty()` is true: before the first item, or between two, and items are lost."""
    _run(trial, trial.mp.Queue(), producer, consumer_until_empty, stops=0)
