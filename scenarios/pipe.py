"""A pipe between two processes: the chapter's `Pipe` example, and why it never ends.

The chapter's receiver loops on ``recv()`` until ``EOFError``. But end-of-file only comes when *every*
copy of the sending end is closed — and with ``Pipe()`` made before the processes start, copies are
everywhere: the parent holds both ends, and a forked receiver inherits the sending end itself. The
sender closes its copy; the others stay open; the receiver waits for ever. Closing the unused ends
in every process fixes it, and so does not relying on end-of-file at all (an explicit end message).
"""

from harness import Scenario, Trial

scenario = Scenario(
    "pipe",
    "A sender sends three messages through a Pipe; a receiver reads until the end (the chapter's Pipe example)",
    stress_only="its actors are processes",
)

MESSAGES = ["Привет", "Мир", "Python"]


def sender(conn):  # type: ignore[no-untyped-def]
    """The chapter's `sender`."""
    for msg in MESSAGES:
        conn.send(msg)
    conn.close()


def receiver(conn):  # type: ignore[no-untyped-def]
    """The chapter's `receiver`: reads until EOFError."""
    received = []
    while True:
        try:
            msg = conn.recv()  # RECEIVES HERE
        except EOFError:
            break
        received.append(msg)
    return received


def sender_closing(conn, other_end):  # type: ignore[no-untyped-def]
    other_end.close()  # this process only sends: close the receiving end it inherited
    sender(conn)


def receiver_closing(conn, other_end):  # type: ignore[no-untyped-def]
    other_end.close()  # this process only receives: close the sending end, or EOF never comes
    return receiver(conn)


def sender_with_end_message(conn):  # type: ignore[no-untyped-def]
    for msg in MESSAGES:
        conn.send(msg)
    conn.send(None)  # an explicit end of stream
    conn.close()


def receiver_until_end_message(conn):  # type: ignore[no-untyped-def]
    received = []
    while (msg := conn.recv()) is not None:
        received.append(msg)
    return received


def _check(trial: Trial, results: list) -> None:  # type: ignore[type-arg]
    received = results[1]
    trial.check(received == MESSAGES, f"the receiver got {received!r}")


@scenario.variant(expect="unsafe")
def parent_keeps_ends(trial: Trial) -> None:
    """The chapter's code: every process keeps both ends open, so `recv()` never sees EOF."""
    parent_conn, child_conn = trial.mp.Pipe()
    with trial.processes() as group:
        group.start(sender, parent_conn)
        group.start(receiver, child_conn)
    _check(trial, group.results)


@scenario.variant(expect="safe")
def close_unused_ends(trial: Trial) -> None:
    """Each process closes the end it does not use; the parent closes both once they started."""
    parent_conn, child_conn = trial.mp.Pipe()
    with trial.processes() as group:
        group.start(sender_closing, parent_conn, child_conn)
        group.start(receiver_closing, child_conn, parent_conn)
        group.close_after_start(parent_conn, child_conn)
    _check(trial, group.results)


@scenario.variant(expect="safe")
def end_message(trial: Trial) -> None:
    """The sender ends with an explicit `None`: the receiver never waits for end-of-file."""
    parent_conn, child_conn = trial.mp.Pipe()
    with trial.processes() as group:
        group.start(sender_with_end_message, parent_conn)
        group.start(receiver_until_end_message, child_conn)
    _check(trial, group.results)
