"""SupervisedProcess on a fake reactor: restarts with Twisted's backoffPolicy, resets when stable, stops with TERM then KILL."""

from __future__ import annotations

import signal

from twisted.application.internet import backoffPolicy
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure

from fephp.process.supervisor import ChildProcess, SupervisedProcess
from fephp.testing import FakeProcessReactor


def died() -> Failure:
    return Failure(ProcessTerminated(signal=signal.SIGKILL))


def make(reactor: FakeProcessReactor, **kwargs: object) -> tuple[SupervisedProcess, list[str]]:
    deaths: list[str] = []

    def spawn() -> ChildProcess:
        child = ChildProcess()
        reactor.spawnProcess(child, "/bin/child", ["child"])
        return child

    kwargs.setdefault("backoff", backoffPolicy(0.5, 4.0, 2.0, jitter=lambda: 0.0))
    supervised = SupervisedProcess(
        reactor, "child", spawn, on_exit=lambda child, reason: deaths.append(f"{child.pid}"), **kwargs  # type: ignore[arg-type]
    )
    return supervised, deaths


def test_a_dead_child_is_restarted_after_a_doubling_backoff() -> None:
    """Deaths in a row wait 0.5, 1, 2, 4, 4 s; on_exit hears of each; restarts counts them."""
    reactor = FakeProcessReactor(first_pid=10)
    supervised, deaths = make(reactor)
    supervised.start()
    waits = []
    for _ in range(5):
        reactor.spawned[-1].protocol.processExited(died())
        count = len(reactor.spawned)
        call = reactor.getDelayedCalls()[0]
        waits.append(call.getTime() - reactor.seconds())
        reactor.advance(waits[-1])
        assert len(reactor.spawned) == count + 1
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert deaths == ["10", "11", "12", "13", "14"]
    assert (supervised.restarts, supervised.pid) == (5, 15)


def test_stable_starts_the_backoff_again() -> None:
    """After stable() (the owner saw the child work) the next death waits the first delay again."""
    reactor = FakeProcessReactor()
    supervised, _ = make(reactor)
    supervised.start()
    for _ in range(3):
        reactor.spawned[-1].protocol.processExited(died())
        reactor.advance(10)
    supervised.stable()
    reactor.spawned[-1].protocol.processExited(died())
    assert reactor.getDelayedCalls()[0].getTime() - reactor.seconds() == 0.5


def test_a_long_run_counts_as_stable() -> None:
    """With stable_after, a child that ran that long before dying is restarted after the first delay."""
    reactor = FakeProcessReactor()
    supervised, _ = make(reactor, stable_after=10.0)
    supervised.start()
    reactor.spawned[-1].protocol.processExited(died())
    reactor.advance(0.5)
    reactor.advance(10.0)
    reactor.spawned[-1].protocol.processExited(died())
    assert reactor.getDelayedCalls()[0].getTime() - reactor.seconds() == 0.5


def test_a_child_that_cannot_start_is_tried_again() -> None:
    """A spawn that raises is logged and retried after the backoff, like a death."""
    reactor = FakeProcessReactor()
    attempts: list[float] = []

    def spawn() -> ChildProcess:
        attempts.append(reactor.seconds())
        if len(attempts) < 3:
            raise OSError("no such file")
        child = ChildProcess()
        reactor.spawnProcess(child, "/bin/child", ["child"])
        return child

    supervised = SupervisedProcess(reactor, "child", spawn, backoff=backoffPolicy(0.5, 4.0, 2.0, jitter=lambda: 0.0))
    supervised.start()
    reactor.advance(0.5)
    reactor.advance(1.0)
    assert attempts == [0.0, 0.5, 1.5]
    assert supervised.pid == reactor.spawned[0].transport.pid


def test_stop_sends_term_then_kill_and_fires_once_exited() -> None:
    """stop() sends SIGTERM, SIGKILL after stop_grace, fires when the child exits, and nothing restarts."""
    reactor = FakeProcessReactor()
    supervised, deaths = make(reactor, stop_grace=3.0)
    supervised.start()
    child = reactor.spawned[0]
    stopped = supervised.stop()
    assert child.transport.signals == ["TERM"]
    reactor.advance(3.0)
    assert child.transport.signals == ["TERM", "KILL"]
    assert not stopped.called
    child.protocol.processExited(died())
    assert stopped.called
    reactor.advance(60)
    assert (len(reactor.spawned), deaths, reactor.getDelayedCalls()) == (1, [], [])


def test_stop_while_waiting_to_restart_cancels_the_restart() -> None:
    """A stop between a death and its restart fires at once and starts nothing."""
    reactor = FakeProcessReactor()
    supervised, _ = make(reactor)
    supervised.start()
    reactor.spawned[0].protocol.processExited(Failure(ProcessDone(0)))
    assert supervised.stop().called
    reactor.advance(60)
    assert len(reactor.spawned) == 1


def test_child_output_is_cut_into_bounded_lines() -> None:
    """line_received gets whole lines per descriptor; a line longer than max_line comes out cut; the rest at exit."""
    lines: list[tuple[int, bytes]] = []

    class Recording(ChildProcess):
        max_line = 8

        def line_received(self, fd: int, line: bytes) -> None:
            lines.append((fd, line))

    child = Recording()
    child.childDataReceived(1, b"one\ntw")
    child.childDataReceived(2, b"err\n")
    child.childDataReceived(1, b"o\n0123456789")
    child.childDataReceived(1, b"tail")
    child.processExited(Failure(ProcessDone(0)))
    assert lines == [(1, b"one"), (2, b"err"), (1, b"two"), (1, b"0123456789"), (1, b"tail")]
