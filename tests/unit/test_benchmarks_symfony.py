"""benchmarks/symfony_worker.py's order of measurements: a php-fpm front is not measured while the other still holds the children."""

from __future__ import annotations

import sys

from tests.support import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import symfony_worker

NGINX, FEPHP, WORKERS, PYPY = "nginx + php-fpm", "fephp + php-fpm", "fephp worker mode", "fephp-pypy worker mode"


def test_a_php_fpm_front_waits_only_after_the_other_php_fpm_front() -> None:
    """Only a php-fpm front measured right after the other php-fpm front waits for its idle connections to close."""
    cases = {
        (None, NGINX): False,
        (NGINX, FEPHP): True,
        (FEPHP, NGINX): True,
        (FEPHP, FEPHP): False,
        (FEPHP, WORKERS): False,
        (WORKERS, NGINX): False,
        (PYPY, FEPHP): False,
        (WORKERS, PYPY): False,
    }
    assert {case: symfony_worker.waits_for_children(*case) for case in cases} == cases
