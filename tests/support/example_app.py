"""The example app (examples/app) as etc/fephp.yaml serves it, for the integration tests that run it through a front: a copy and its config."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tests.support import REPO

__all__ = ["APP", "STATIC_MAX_AGE", "example_config"]

APP = REPO / "examples" / "app"

#: The ``expires`` of the cache rule the config gives /static/, in seconds.
STATIC_MAX_AGE = 3600


def example_config(tmp_path: Path) -> dict[str, Any]:
    """A copy of examples/app under *tmp_path*, and the config (as a YAML file's dict) that serves its public/.

    As etc/fephp.yaml: index.php as index and front controller, /data/ and
    /conf/ denied, compression on by default; plus the ``static.cache`` rule
    its comments suggest, so that static files carry Cache-Control and
    Expires.
    """
    shutil.copytree(APP, tmp_path / "app")
    return {
        "server": {
            "root": str(tmp_path / "app" / "public"),
            "index": ["index.php"],
            "front_controller": "/index.php",
            "deny": ["/data/", "/conf/"],
            "server_software": "fephp",
        },
        "static": {"cache": [{"prefix": "/static/", "expires": STATIC_MAX_AGE}]},
    }
