"""The ``fephp bench`` command on a fake reactor: Ctrl-C against the run's end, the exit status, the progress line."""

from __future__ import annotations

import argparse
import io

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from fephp.bench.command import EXIT_INTERRUPTED, Session, add_arguments, exit_status, run
from tests.support.bench_fakes import OK, URL, FakePeer, ThreadCallReactor, TtyStream

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

    def step(self, steps: int = 1, answer: bytes = OK) -> None:
        """*steps* steps of 1/8 s: connects completed, each request answered with *answer* 1/16 s after its send."""
        for _ in range(steps):
            self.peer.accept()
            self.reactor.advance(0.0625)
            self.peer.answer_all(answer)
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


#: What a run of 2.5 s answered as Command.step answers shows on a terminal: a line at 1 s, at 2 s, cleared at its end.
LINE_AT_1S = "   1.0 s of 2.5 s        8.0 req/s  p99 so far     62.53 ms  errors 1"
LINE_AT_2S = "   2.0 s of 2.5 s        8.0 req/s  p99 so far     62.53 ms  errors 1"


def _run_with_one_error(command: Command, at_1s: list[str], at_2s: list[str]) -> None:
    """Answer 2.5 s of requests, the third with bytes that are not HTTP; note stdout at 1 s and 2 s."""
    command.step(2)
    command.step(answer=b"this is not HTTP\r\n\r\n")
    command.step(5)
    at_1s.append(command.stdout.getvalue())
    command.step(8)
    at_2s.append(command.stdout.getvalue())
    command.step(4)
    assert command.session.ended


class ProgressTests(SynchronousTestCase):
    def test_progress_line_on_a_terminal(self) -> None:
        """On a terminal, a line each second rewritten in place, cleared before the report, which is unchanged."""
        on_tty = Command("--duration", "2.5", stdout=TtyStream())
        piped = Command("--duration", "2.5")
        seen: list[str] = []
        _run_with_one_error(on_tty, seen, seen)
        _run_with_one_error(piped, [], [])
        self.assertEqual(
            seen,
            [
                f"\r{LINE_AT_1S}\x1b[K",
                f"\r{LINE_AT_1S}\x1b[K\r{LINE_AT_2S}\x1b[K",
            ],
        )
        report = piped.stdout.getvalue()
        self.assertEqual(piped.requests_line(), "Requests        20 sent in 2.50 s: 19 responses, 1 errors")
        self.assertEqual(on_tty.stdout.getvalue(), f"\r{LINE_AT_1S}\x1b[K\r{LINE_AT_2S}\x1b[K\r\x1b[K{report}")
        self.assertEqual(on_tty.session.exit_status(), 0)

    def test_no_progress_when_not_a_terminal(self) -> None:
        """When stdout is not a terminal, it gets the report alone, with no carriage return or escape."""
        command = Command("--duration", "2.5")
        _run_with_one_error(command, [], [])
        text = command.stdout.getvalue()
        self.assertEqual((text.count("\r"), text.count("\x1b"), text.splitlines()[0]), (0, 0, f"fephp bench {URL}"))

    def test_quiet_on_a_terminal(self) -> None:
        """With -q, a terminal gets neither the progress line nor the report."""
        command = Command("--duration", "2.5", "-q", stdout=TtyStream())
        at_1s: list[str] = []
        _run_with_one_error(command, at_1s, [])
        self.assertEqual((at_1s, command.stdout.getvalue()), ([""], ""))
        self.assertEqual(command.session.exit_status(), 0)

    def test_interrupt_clears_the_line(self) -> None:
        """Ctrl-C on a terminal clears the progress line before the partial report."""
        command = Command("--duration", "2.5", stdout=TtyStream())
        command.step(10)
        command.session.interrupt_received()
        command.reactor.next_turn()
        text = command.stdout.getvalue()
        line = "   1.0 s of 2.5 s        8.0 req/s  p99 so far     62.53 ms  errors 0"
        self.assertEqual(text.split("fephp bench")[0], f"\r{line}\x1b[K\r\x1b[K")
        self.assertEqual(command.requests_line(), "Requests        10 sent in 1.25 s: 10 responses, 0 errors")
        self.assertEqual(command.session.exit_status(), EXIT_INTERRUPTED)
