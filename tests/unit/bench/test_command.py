"""The ``fephp bench`` command on a fake reactor: Ctrl-C against the run's end, the exit status, the progress line."""

from __future__ import annotations

import argparse
import io

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from fephp.bench.command import EXIT_INTERRUPTED, Session, add_arguments, exit_status, run
from tests.support.bench_fakes import URL, FakePeer, ThreadCallReactor

#: A run of eight requests, one each 1/8 s (exact steps for the fake clock), over two connections.
ARGS = ("--url", URL, "--rps", "8", "--concurrency", "2", "--duration", "1")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([*ARGS, *argv])


class Command:
    """``fephp bench`` started on a ThreadCallReactor, with the far end of its connections."""

    def __init__(self, *argv: str, stdout: io.StringIO | None = None) -> None:
        self.reactor = ThreadCallReactor()
        self.peer = FakePeer(self.reactor)
        self.stdout = stdout or io.StringIO()
        self.stderr = io.StringIO()
        started = run(
            parse(*argv), self.reactor, self.stdout, self.stderr, now=self.reactor.seconds, cpu_time=lambda: 0.0
        )
        assert not isinstance(started, int)
        self.bench, status = started
        self.session = Session(self.bench, status, self.reactor, self.stderr)

    def step(self) -> None:
        """One 1/8 s step: the connects completed, each request answered 1/16 s after it was sent."""
        self.peer.accept()
        self.reactor.advance(0.0625)
        self.peer.answer_all()
        self.reactor.advance(0.0625)

    def requests_line(self) -> str:
        """The report's line that counts requests and responses."""
        (line,) = [line for line in self.stdout.getvalue().splitlines() if line.startswith("Requests")]
        return line


class InterruptTests(SynchronousTestCase):
    def test_interrupt_mid_run(self) -> None:
        """Ctrl-C half way stops the run on the reactor's next turn: its partial report, exit status 130."""
        command = Command()
        for _ in range(4):
            command.step()
        command.session.interrupt_received()
        self.assertFalse(command.session.ended)
        command.reactor.next_turn()
        self.assertTrue(command.session.ended)
        self.assertEqual(command.requests_line(), "Requests        4 sent in 0.50 s: 4 responses, 0 errors")
        self.assertEqual(command.session.exit_status(), EXIT_INTERRUPTED)

    def test_interrupt_in_the_turn_that_ends_the_run(self) -> None:
        """Ctrl-C received in the reactor turn whose last answer ends the run gives 130, though its stop lands after."""
        command = Command()
        for _ in range(7):
            command.step()
        command.peer.accept()
        command.reactor.advance(0.0625)
        command.session.interrupt_received()  # the signal comes while the reactor reads the last answer
        command.peer.answer_all()
        self.assertTrue(command.session.ended)
        command.reactor.next_turn()  # the run's stop lands: the run is over already
        self.assertEqual(command.requests_line(), "Requests        8 sent in 1.00 s: 8 responses, 0 errors")
        self.assertEqual(command.session.exit_status(), EXIT_INTERRUPTED)

    def test_interrupt_while_the_report_is_written(self) -> None:
        """Ctrl-C received while the report is being printed gives 130."""

        class Interrupting(io.StringIO):
            def write(self, text: str) -> int:
                command.session.interrupt_received()
                return super().write(text)

        command = Command(stdout=Interrupting())
        for _ in range(8):
            command.step()
        self.assertTrue(command.session.ended)
        command.reactor.next_turn()
        self.assertEqual(command.requests_line(), "Requests        8 sent in 1.00 s: 8 responses, 0 errors")
        self.assertEqual(command.session.exit_status(), EXIT_INTERRUPTED)

    def test_no_interrupt(self) -> None:
        """A run left alone exits 0 with its whole report, and nothing is queued for the reactor."""
        command = Command()
        for _ in range(8):
            command.step()
        self.assertTrue(command.session.ended)
        self.assertEqual(command.reactor.thread_calls, [])
        self.assertEqual(command.requests_line(), "Requests        8 sent in 1.00 s: 8 responses, 0 errors")
        self.assertEqual(command.session.exit_status(), 0)

    def test_exit_status(self) -> None:
        """130 after Ctrl-C unless the run's own status is a failure; a run that never ended was interrupted."""
        failure = Failure(RuntimeError("no route"))
        self.assertEqual(
            [
                exit_status(0, False),
                exit_status(0, True),
                exit_status(1, False),
                exit_status(1, True),
                exit_status(None, False),
                exit_status(failure, False),
                exit_status(failure, True),
            ],
            [0, 130, 1, 1, 130, 1, 130],
        )
