"""What the tests share: fixtures' machinery, real helper processes, sample data.

Test modules import from here (and from :mod:`fephp.testing`), never from
each other; ``tests/conftest.py`` holds only fixtures.
"""

from pathlib import Path

#: The tests folder, the PHP scripts the tests run, and the repository.
TESTS = Path(__file__).resolve().parent.parent
PHP_DIR = TESTS / "php"
REPO = TESTS.parent
