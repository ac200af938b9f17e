"""Configuration loading: defaults, path resolution, and one exact message per kind of error."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import MappingProxyType

import pytest

from fephp import __version__
from fephp.process.binaries import find_php
from fephp.server.config import config_from_dict, load_config
from fephp.server.settings import (
    AdminConfig,
    BackendConfig,
    CompressionConfig,
    Config,
    StaticConfig,
    ConfigError,
    LimitsConfig,
    LoggingConfig,
    PHPConfig,
    ServerConfig,
    TimeoutsConfig,
)
from fephp.web.sendfile import SendfileRoot
from fephp.web.static import CacheRule
from tests.support.configs import EXTERNAL, error_for, write
from tests.support.tls import self_signed_pem


def test_defaults(site: Path) -> None:
    """A file naming only an external php-fpm gets every documented default, public/ beside it as root."""
    path = write(site, EXTERNAL)
    config = load_config(str(path))
    assert config == Config(
        server=ServerConfig(
            listen=("tcp:8080:interface=127.0.0.1",),
            root=str(site / "public"),
            index=("index.php",),
            front_controller="/index.php",
            deny=(),
            server_software=f"fephp/{__version__}",
            server_name=None,
            shutdown_grace=10.0,
            workers=1,
            http2=True,
        ),
        php=PHPConfig(
            use_fpm=True,
            fpm_socket="127.0.0.1:9000",
            worker_pool_size=16,
            queue_size=1024,
            php_fpm_binary=None,
            php_cgi_binary=None,
            max_requests=1000,
            ini=MappingProxyType({}),
        ),
        timeouts=TimeoutsConfig(connect=5.0, response=60.0, idle=30.0, queue=30.0),
        limits=LimitsConfig(max_body_size=64 * 1024 * 1024, max_header_size=16 * 1024),
        logging=LoggingConfig(access_log=None, level="info"),
        source=str(path),
    )
    assert config.php.mode == "external"


def test_every_key_set(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key given is taken as written: sizes with suffixes, float seconds, relative paths against the file's folder."""
    (site / "app" / "web").mkdir(parents=True)
    (site / "logs").mkdir()
    monkeypatch.chdir("/")
    path = write(
        site,
        """
server:
  listen: "unix:/tmp/fephp-test.sock"
  root: app/web
  index: [index.php, index.html]
  front_controller: null
  deny: [/data/, /conf/]
  server_software: Apache
  server_name: example.test
  shutdown_grace: 0
php:
  fpm_socket: unix:path=/run/php/php8.2-fpm.sock
  worker_pool_size: 4
  queue_size: 0
  max_requests: 0
  ini: {memory_limit: 256M, display_errors: false, max_input_vars: 5000}
timeouts: {connect: 0.5, response: 120, idle: 2.5, queue: 1, client_header: 10, client_body: 20, client_send: 30, keepalive: 75}
limits: {max_body_size: 1g, max_header_size: 8192}
logging: {access_log: logs/access.log, level: debug}
""",
    )
    config = load_config(str(path))
    assert config.server == ServerConfig(
        listen=("unix:/tmp/fephp-test.sock",),
        root=str(site / "app" / "web"),
        index=("index.php", "index.html"),
        front_controller=None,
        deny=("/data/", "/conf/"),
        server_software="Apache",
        server_name="example.test",
        shutdown_grace=0.0,
    )
    assert (config.php.worker_pool_size, config.php.queue_size, config.php.max_requests) == (4, 0, 0)
    assert dict(config.php.ini) == {"memory_limit": "256M", "display_errors": "0", "max_input_vars": "5000"}
    assert config.timeouts == TimeoutsConfig(
        connect=0.5, response=120.0, idle=2.5, queue=1.0, client_header=10.0, client_body=20.0, client_send=30.0, keepalive=75.0
    )
    assert config.limits == LimitsConfig(max_body_size=1024**3, max_header_size=8192)
    assert config.logging == LoggingConfig(access_log=str(site / "logs" / "access.log"), level="debug")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64m", 64 * 1024**2),
        ("16k", 16 * 1024),
        ("2G", 2 * 1024**3),
        ("10kb", 10 * 1024),
        ("512", 512),
        (1000, 1000),
    ],
)
def test_sizes(site: Path, text: object, expected: int) -> None:
    """Sizes are bytes, or a number with k, m or g (powers of 1024, any case, an optional b)."""
    path = write(site, EXTERNAL + f"limits:\n  max_body_size: {text}\n")
    assert load_config(str(path)).limits.max_body_size == expected


def test_binaries_resolve_against_the_config_folder(site: Path) -> None:
    """A relative php_fpm_binary is found beside the config file and made absolute."""
    fake = site / "bin" / "php-fpm"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    config = load_config(str(write(site, "php:\n  php_fpm_binary: bin/php-fpm\n")))
    assert (config.php.mode, config.php.php_fpm_binary) == ("managed", str(fake))


def test_managed_mode_finds_php_fpm(site: Path) -> None:
    """Managed mode with php_fpm_binary null resolves to what find_php("php-fpm") finds."""
    found = find_php("php-fpm")
    if found is None:
        pytest.skip("php-fpm is not installed")
    config = load_config(str(write(site, "php:\n  use_fpm: true\n")))
    assert (config.php.mode, config.php.php_fpm_binary, config.php.php_cgi_binary) == ("managed", found, None)


def test_php_cgi_mode_finds_php_cgi(site: Path) -> None:
    """use_fpm false with php_cgi_binary null resolves to what find_php("php-cgi") finds."""
    found = find_php("php-cgi")
    if found is None:
        pytest.skip("php-cgi is not installed")
    config = load_config(str(write(site, "php:\n  use_fpm: false\n")))
    assert (config.php.mode, config.php.php_cgi_binary, config.php.php_fpm_binary) == ("php-cgi", found, None)


#: (YAML after the external php-fpm lines, dotted key, line, problem).
ERRORS = [
    ("php:\n  worker_pool_size: many\n", "php.worker_pool_size", 2, "must be an integer, not the string 'many'"),
    ("php:\n  worker_pool_size: true\n", "php.worker_pool_size", 2, "must be an integer, not the boolean true"),
    ("php:\n  worker_pool_size: 0\n", "php.worker_pool_size", 2, "must be at least 1, not 0"),
    ("php:\n  queue_size: -1\n", "php.queue_size", 2, "must be at least 0, not -1"),
    ("php:\n  max_requests: 1.5\n", "php.max_requests", 2, "must be an integer, not the number 1.5"),
    ("php:\n  use_fpm: 'no'\n", "php.use_fpm", 2, "must be true or false, not the string 'no'"),
    ("sever:\n  root: x\n", "sever", 1, "unknown key; did you mean 'server'?"),
    ("timeouts:\n  conect: 5\n", "timeouts.conect", 2, "unknown key; did you mean 'connect'?"),
    ("logging:\n  zzz: 1\n", "logging.zzz", 2,
     "unknown key; expected one of: access_log, level, access_log_format, access_log_duration, format, secret_query"),
    ("logging:\n  access_log_format: clf\n", "logging.access_log_format", 2, "must be one of combined, json, not the string 'clf'"),
    ("logging:\n  format: xml\n", "logging.format", 2, "must be one of text, json, not the string 'xml'"),
    ("logging:\n  access_log_duration: 1\n", "logging.access_log_duration", 2, "must be true or false, not the number 1"),
    ("logging:\n  secret_query: [token, 'a=b']\n", "logging.secret_query[1]", 2,
     "must be a query parameter name (no '&', '=' or space), not 'a=b'"),
    ("admin:\n  listen: [\"tcp:8080:interface=127.0.0.1\"]\n", "admin.listen[0]", 2,
     "'tcp:8080:interface=127.0.0.1' is also in server.listen; the admin listener must be another one"),
    ("admin:\n  port: 9100\n", "admin.port", 2, "unknown key; expected one of: listen"),
    ("php:\n  status_path: status\n", "php.status_path", 2, "must start with '/', not 'status'"),
    ("timeouts:\n  response: 0\n", "timeouts.response", 2, "must be more than zero seconds, not 0"),
    ("timeouts:\n  connect: 5s\n", "timeouts.connect", 2, "must be a number of seconds, not the string '5s'"),
    ("timeouts:\n  idle: .inf\n", "timeouts.idle", 2, "must be more than zero seconds, not inf"),
    ("timeouts:\n  client_header: 0\n", "timeouts.client_header", 2, "must be more than zero seconds, not 0"),
    ("timeouts:\n  client_body: slow\n", "timeouts.client_body", 2, "must be a number of seconds, not the string 'slow'"),
    ("timeouts:\n  client_send: -5\n", "timeouts.client_send", 2, "must be more than zero seconds, not -5"),
    ("timeouts:\n  keepalive: null\n", "timeouts.keepalive", 2, "must be a number of seconds, not null"),
    ("timeouts:\n  keep_alive: 5\n", "timeouts.keep_alive", 2, "unknown key; did you mean 'keepalive'?"),
    ("server:\n  shutdown_grace: -1\n", "server.shutdown_grace", 2, "must be zero or more seconds, not -1"),
    ("server:\n  workers: 0\n", "server.workers", 2, "must be an integer of 1 or more, or 'auto', not the number 0"),
    ("server:\n  workers: many\n", "server.workers", 2, "must be an integer of 1 or more, or 'auto', not the string 'many'"),
    ("server:\n  workers: true\n", "server.workers", 2, "must be an integer of 1 or more, or 'auto', not the boolean true"),
    ("server:\n  workers: 1.5\n", "server.workers", 2, "must be an integer of 1 or more, or 'auto', not the number 1.5"),
    ("server:\n  http2: 'off'\n", "server.http2", 2, "must be true or false, not the string 'off'"),
    ("limits:\n  max_body_size: 10x\n", "limits.max_body_size", 2, "must be a size in bytes (like 65536 or 64m), not '10x'"),
    ("limits:\n  max_header_size: 0\n", "limits.max_header_size", 2, "must be more than zero bytes, not 0"),
    ("limits:\n  max_header_size: false\n", "limits.max_header_size", 2,
     "must be a size in bytes (like 65536 or 64m), not the boolean false"),
    ("server:\n  front_controller: index.php\n", "server.front_controller", 2, "must start with '/', not 'index.php'"),
    ("server:\n  deny:\n    - /data/\n    - conf/\n", "server.deny[1]", 4, "must start with '/', not 'conf/'"),
    ("server:\n  index: [a/b.php]\n", "server.index[0]", 2, "must be a file name without '/', not 'a/b.php'"),
    ("server:\n  index: {a: 1}\n", "server.index", 2, "must be a list of strings, not a mapping"),
    ("server:\n  listen: []\n", "server.listen", 2, "must name at least one endpoint to listen on"),
    ("server:\n  server_software: \"a\\nb\"\n", "server.server_software", 2, "must not contain a line break or NUL"),
    ("server:\n  server_name: ''\n", "server.server_name", 2, "must not be empty"),
    ("logging:\n  level: verbose\n", "logging.level", 2, "must be one of debug, info, warn, error, not the string 'verbose'"),
    ("php:\n  ini:\n    memory limit: 1G\n", "php.ini.memory limit", 3,
     "is not a PHP ini setting name (letters, digits, '_', '.', '-')"),
    ("php:\n  ini:\n    memory_limit: [1G]\n", "php.ini.memory_limit", 3, "must be a string or a number, not a list"),
    ("php:\n  ini: 5\n", "php.ini", 2, "must be a mapping of PHP ini settings, not the number 5"),
    ("php:\n  queue_size: 1\n  queue_size: 2\n", "php.queue_size", 3, "duplicate key"),
    ("php: 3\n", "php", 1, "must be a mapping, not the number 3"),
    ("compression:\n  algorithms: [gzip, deflate]\n", "compression.algorithms[1]", 2,
     "must be one of zstd, br, gzip, not 'deflate'"),
    ("compression:\n  algorithms: [gzip, gzip]\n", "compression.algorithms[1]", 2, "'gzip' is named twice"),
    ("compression:\n  algorithms: []\n", "compression.algorithms", 2,
     "must name at least one coding (set compression.enabled: false for none)"),
    ("compression:\n  gzip_level: 10\n", "compression.gzip_level", 2, "must be at most 9, not 10"),
    ("compression:\n  brotli_level: -1\n", "compression.brotli_level", 2, "must be at least 0, not -1"),
    ("compression:\n  zstd_level: 0\n", "compression.zstd_level", 2, "must be at least 1, not 0"),
    ("compression:\n  min_size: 0\n", "compression.min_size", 2, "must be more than zero bytes, not 0"),
    ("compression:\n  enabled: 'yes'\n", "compression.enabled", 2, "must be true or false, not the string 'yes'"),
    ("compression:\n  types: [text/html, html]\n", "compression.types[1]", 2,
     "must be a media type like text/html or text/*, not 'html'"),
    ("static:\n  cache: {prefix: /}\n", "static.cache", 2,
     "must be a list of rules (prefix, cache_control, expires), not a mapping"),
    ("static:\n  cache:\n    - cache_control: public\n", "static.cache[0]", 3, "needs a prefix (a URL path starting with '/')"),
    ("static:\n  cache:\n    - prefix: static/\n      expires: 1d\n", "static.cache[0].prefix", 3,
     "must start with '/', not 'static/'"),
    ("static:\n  cache:\n    - prefix: /s/\n", "static.cache[0]", 3, "needs cache_control, expires or both"),
    ("static:\n  cache:\n    - prefix: /s/\n      expires: 1 year\n", "static.cache[0].expires", 4,
     "must be a time like 3600, 30d or 1y (s, m, h, d, w, M, y), max or epoch, not the string '1 year'"),
    ("static:\n  cache:\n    - prefix: /s/\n      expires: 1d\n    - prefix: /s/\n      expires: 2d\n",
     "static.cache[1].prefix", 5, "'/s/' has a rule already"),
    ("static:\n  cache:\n    - prefix: /s/\n      max_age: 1\n", "static.cache[0].max_age", 4,
     "unknown key; expected one of: prefix, cache_control, expires"),
    ("static:\n  memory_cache_size: -1\n", "static.memory_cache_size", 2, "must be more than zero bytes, not -1"),
    ("static:\n  memory_cache_size: lots\n", "static.memory_cache_size", 2,
     "must be a size in bytes (like 65536 or 64m), not 'lots'"),
    ("server:\n  x_sendfile_roots: [/nonexistent-fephp-folder]\n", "server.x_sendfile_roots[0]", 2,
     "the folder /nonexistent-fephp-folder does not exist"),
    ("server:\n  x_sendfile_roots: ['/=/x/']\n", "server.x_sendfile_roots[0]", 2, "must not be / (every file of the machine)"),
    ("server:\n  x_sendfile_roots: ['/tmp=protected']\n", "server.x_sendfile_roots[0]", 2,
     "the URI prefix must be a path starting with '/' (no ?, #, %, ',', '=' or space), not 'protected'"),
    ("server:\n  early_hints: 1\n", "server.early_hints", 2, "must be true or false, not the number 1"),
    ("server:\n  early_hints_max_routes: 0\n", "server.early_hints_max_routes", 2, "must be at least 1, not 0"),
    ("compression:\n  level: 5\n", "compression.level", 2, "unknown key; did you mean 'zstd_level'?"),
]


@pytest.mark.parametrize(("tail", "key", "line", "problem"), ERRORS, ids=[e[1] + ":" + e[3][:30] for e in ERRORS])
def test_error_names_file_key_and_line(site: Path, tail: str, key: str, line: int, problem: str) -> None:
    """Each invalid value gives exactly "<file>, line <n>: <key>: <problem>" with the line of the key in the file."""
    # The external php-fpm goes last so that the lines of *tail* are as written.
    if tail.startswith("php:\n"):
        text = tail + "  fpm_socket: 127.0.0.1:9000\n"
    elif tail.startswith("php:"):
        text = tail  # the php section itself is the error
    else:
        text = tail + EXTERNAL
    path = site / "fephp.yaml"
    assert error_for(site, text) == f"{path}, line {line}: {key}: {problem}"


def test_operations_keys(site: Path) -> None:
    """The admin listener, the log forms, the secret query parameters and an external pool's status and ping paths are taken as written."""
    path = write(
        site,
        """
admin:
  listen: ["tcp:9100:interface=127.0.0.1", "unix:/tmp/fephp-admin.sock"]
logging:
  access_log_format: json
  access_log_duration: true
  format: json
  secret_query: [token, password]
php:
  fpm_socket: 127.0.0.1:9000
  status_path: /status
  ping_path: /ping
""",
    )
    config = load_config(str(path))
    assert config.admin == AdminConfig(listen=("tcp:9100:interface=127.0.0.1", "unix:/tmp/fephp-admin.sock"))
    assert config.logging == LoggingConfig(
        access_log=None, level="info", access_log_format="json", access_log_duration=True,
        format="json", secret_query=("token", "password"),
    )
    assert (config.php.status_path, config.php.ping_path) == ("/status", "/ping")


def test_no_admin_listener_by_default(site: Path) -> None:
    """Without an admin section, and with an empty list, there is no admin listener."""
    assert load_config(str(write(site, EXTERNAL))).admin.listen == ()
    assert load_config(str(write(site, EXTERNAL + "admin:\n  listen: []\n"))).admin.listen == ()


def test_status_path_is_for_an_external_pool_only(site: Path) -> None:
    """php.status_path on the managed pool is an error: fephp gives that pool its own."""
    if find_php("php-fpm") is None:
        pytest.skip("php-fpm is not installed")
    message = error_for(site, "php:\n  status_path: /status\n")
    assert message == f"{site / 'fephp.yaml'}, line 2: php.status_path: applies to an external pool only (php.fpm_socket or php.backends)"


def test_bad_listen_endpoint(site: Path) -> None:
    """A listen string Twisted cannot parse is an error at that list item's line, with Twisted's reason."""
    message = error_for(site, 'server:\n  listen:\n    - "tcp:8080"\n    - "tcp:80:bogus=1"\n' + EXTERNAL)
    assert message.startswith(
        f"{site / 'fephp.yaml'}, line 4: server.listen[1]: not a server endpoint string: 'tcp:80:bogus=1' ("
    )
    assert "bogus" in message


def test_bad_fpm_socket(site: Path) -> None:
    """An fpm_socket that is no client endpoint is an error at its line, and nothing is connected to."""
    message = error_for(site, "php:\n  fpm_socket: 'unix:'\n")
    assert message.startswith(f"{site / 'fephp.yaml'}, line 2: php.fpm_socket: not a php-fpm address: ")


def test_missing_root(site: Path) -> None:
    """A root that does not exist is an error naming the resolved path at its line."""
    message = error_for(site, "server:\n  root: nowhere\n" + EXTERNAL)
    assert message == f"{site / 'fephp.yaml'}, line 2: server.root: the document root {site / 'nowhere'} does not exist"


def test_root_is_a_file(site: Path) -> None:
    """A root that is a file is an error."""
    message = error_for(site, "server:\n  root: afile\n" + EXTERNAL)
    assert message == f"{site / 'fephp.yaml'}, line 2: server.root: the document root {site / 'afile'} is not a directory"


def test_missing_default_root(tmp_path: Path) -> None:
    """Without server.root and without public/ beside the file, the error says the default is missing (no line to give)."""
    message = error_for(tmp_path, EXTERNAL)
    assert message == (
        f"{tmp_path / 'fephp.yaml'}: server.root: the document root {tmp_path / 'public'}"
        " (the default: public/ beside the config file) does not exist"
    )


def test_default_error_takes_its_section_line(tmp_path: Path) -> None:
    """A defaulted key's error points at its section's line when the section is in the file."""
    message = error_for(tmp_path, EXTERNAL + "server:\n  index: [index.php]\n")
    assert message.startswith(f"{tmp_path / 'fephp.yaml'}, line 3: server.root: the document root ")


def test_access_log_folder_must_exist(site: Path) -> None:
    """An access log in a folder that does not exist is an error naming the folder."""
    message = error_for(site, EXTERNAL + "logging:\n  access_log: nolog/access.log\n")
    assert message == f"{site / 'fephp.yaml'}, line 4: logging.access_log: the folder {site / 'nolog'} does not exist"


def test_access_log_dash_is_stdout(site: Path) -> None:
    """access_log "-" stays "-" (standard output), not a path."""
    config = load_config(str(write(site, EXTERNAL + "logging:\n  access_log: '-'\n")))
    assert config.logging.access_log == "-"


def test_binary_must_exist_and_be_executable(site: Path) -> None:
    """A php_cgi_binary that does not exist, or is not executable, is an error at its line (a name with '/' is relative to the file)."""
    message = error_for(site, "php:\n  use_fpm: false\n  php_cgi_binary: ./nope\n")
    assert message == f"{site / 'fephp.yaml'}, line 3: php.php_cgi_binary: './nope' is not an existing file"
    (site / "afile").chmod(stat.S_IRUSR)
    message = error_for(site, "php:\n  use_fpm: false\n  php_cgi_binary: ./afile\n")
    # Even root may execute only a file with an execute bit.
    assert message == f"{site / 'fephp.yaml'}, line 3: php.php_cgi_binary: {site / 'afile'} is not executable"


def test_yaml_syntax_error(site: Path) -> None:
    """Broken YAML is an error with the line where the parser gave up."""
    message = error_for(site, "php:\n  fpm_socket: [\n")
    assert message == (
        f"{site / 'fephp.yaml'}, line 3: not valid YAML: while parsing a flow node"
        " expected the node content, but found '<stream end>'"
    )


def test_top_level_must_be_a_mapping(site: Path) -> None:
    """A document that is a list is an error about the whole file."""
    assert error_for(site, "- a\n- b\n") == f"{site / 'fephp.yaml'}, line 1: the top level must be a mapping of sections, not a list"


def test_missing_file(tmp_path: Path) -> None:
    """A file that cannot be read is an error naming it, with the system's reason."""
    with pytest.raises(ConfigError) as raised:
        load_config(str(tmp_path / "absent.yaml"))
    assert str(raised.value) == f"{tmp_path / 'absent.yaml'}: cannot read the file: No such file or directory"
    assert (raised.value.key, raised.value.line) == (None, None)


def test_error_attributes(site: Path) -> None:
    """ConfigError keeps file, key, line and problem apart for programs."""
    path = write(site, "php:\n  fpm_socket: 127.0.0.1:9000\n  queue_size: -5\n")
    with pytest.raises(ConfigError) as raised:
        load_config(str(path))
    e = raised.value
    assert (e.file, e.key, e.line, e.problem) == (str(path), "php.queue_size", 3, "must be at least 0, not -5")


def test_from_dict(site: Path) -> None:
    """config_from_dict validates a plain dict the same way, with no line numbers, against base_dir."""
    config = config_from_dict({"php": {"fpm_socket": "/run/php.sock"}}, base_dir=str(site))
    assert (config.server.root, config.php.fpm_socket, config.source) == (str(site / "public"), "/run/php.sock", "<dict>")
    with pytest.raises(ConfigError) as raised:
        config_from_dict({"php": {"fpm_socket": "/run/php.sock", "queue_size": "x"}}, base_dir=str(site))
    assert str(raised.value) == "<dict>: php.queue_size: must be an integer, not the string 'x'"


def test_relative_config_path(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config path given relative to the current folder is reported and resolved as absolute."""
    write(site, EXTERNAL)
    monkeypatch.chdir(site)
    config = load_config("fephp.yaml")
    assert (config.source, config.server.root) == (str(site / "fephp.yaml"), str(site / "public"))
    assert os.path.isabs(config.source)


def test_systemd_listen_checks_arguments_only(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A systemd: listener is checked without the sockets systemd passes; a wrong domain is still an error."""
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    config = load_config(str(write(site, 'server:\n  listen: "systemd:domain=INET:index=0"\n' + EXTERNAL)))
    assert config.server.listen == ("systemd:domain=INET:index=0",)
    message = error_for(site, 'server:\n  listen: "systemd:domain=IPX:index=0"\n' + EXTERNAL)
    assert message == (
        f"{site / 'fephp.yaml'}, line 2: server.listen[0]: not a server endpoint string:"
        " 'systemd:domain=IPX:index=0' (domain must be INET, INET6 or UNIX)"
    )


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("3", 3), ("auto", os.cpu_count() or 1)])
def test_workers(site: Path, value: str, expected: int) -> None:
    """server.workers is a count of processes, or auto for one per CPU."""
    config = load_config(str(write(site, f"server:\n  workers: {value}\n" + EXTERNAL)))
    assert config.server.workers == expected


def test_workers_share_tls_listeners_with_the_stdlib_engine_only(site: Path) -> None:
    """With several workers an ssl: listener passes with tls_engine stdlib (each worker wraps it) and is an error at its
    line with pyopenssl; tcp, unix and systemd pass with both."""
    pem = self_signed_pem(site)
    text = (
        "server:\n  workers: 2\n  listen:\n    - tcp:8080\n    - unix:/tmp/fephp-w.sock\n"
        f"    - systemd:domain=INET:index=0\n    - ssl:8443:privateKey={pem}\n" + EXTERNAL
    )
    assert error_for(site, text.replace("  workers: 2\n", "  workers: 2\n  tls_engine: pyopenssl\n")) == (
        f"{site / 'fephp.yaml'}, line 8: server.listen[3]: ssl: listeners are shared by 2 workers (server.workers)"
        " with server.tls_engine: stdlib only, not pyopenssl; or set server.workers to 1"
    )
    config = load_config(str(write(site, text)))
    assert (config.server.tls_engine, config.server.listen) == (
        "stdlib", ("tcp:8080", "unix:/tmp/fephp-w.sock", "systemd:domain=INET:index=0", f"ssl:8443:privateKey={pem}"))


def test_compression_keys(site: Path) -> None:
    """Every compression key is taken as written; types are lower-cased; the default is on."""
    assert load_config(str(write(site, EXTERNAL))).compression == CompressionConfig()
    text = EXTERNAL + (
        "compression:\n  enabled: false\n  algorithms: [gzip, br]\n  min_size: 1k\n  gzip_level: 9\n"
        "  brotli_level: 11\n  zstd_level: 19\n  types: [Text/HTML, 'application/*']\n  precompressed: false\n"
    )
    assert load_config(str(write(site, text))).compression == CompressionConfig(
        enabled=False,
        algorithms=("gzip", "br"),
        min_size=1024,
        gzip_level=9,
        brotli_level=11,
        zstd_level=19,
        types=("text/html", "application/*"),
        precompressed=False,
    )


def test_static_cache_rules(site: Path) -> None:
    """static.cache rules keep their order as written; expires takes nginx's units, max and epoch."""
    text = EXTERNAL + (
        "static:\n  cache:\n"
        "    - {prefix: /static/, cache_control: 'public, max-age=31536000, immutable'}\n"
        "    - {prefix: /img/, expires: 7d}\n"
        "    - {prefix: /feed/, expires: -1, cache_control: no-store}\n"
        "    - {prefix: /fonts/, expires: max}\n"
        "    - {prefix: /old/, expires: epoch}\n"
        "    - {prefix: /y/, expires: 1y}\n"
        "    - {prefix: /n/, expires: 90}\n"
    )
    assert load_config(str(write(site, text))).static == StaticConfig(
        cache=(
            CacheRule("/static/", "public, max-age=31536000, immutable", None),
            CacheRule("/img/", None, 7 * 86400),
            CacheRule("/feed/", "no-store", -1),
            CacheRule("/fonts/", None, "max"),
            CacheRule("/old/", None, "epoch"),
            CacheRule("/y/", None, 365 * 86400),
            CacheRule("/n/", None, 90),
        )
    )


def test_static_memory_cache_size(site: Path) -> None:
    """static.memory_cache_size takes a size with a unit, 0 switches the cache off, and it defaults to 16 MiB."""
    assert load_config(str(write(site, EXTERNAL))).static.memory_cache_size == 16 * 1024 * 1024
    sized = load_config(str(write(site, EXTERNAL + "static:\n  memory_cache_size: 64m\n")))
    assert sized.static.memory_cache_size == 64 * 1024 * 1024
    off = load_config(str(write(site, EXTERNAL + "static:\n  memory_cache_size: 0\n")))
    assert off.static.memory_cache_size == 0


def test_x_sendfile_roots(site: Path) -> None:
    """A root is a folder (relative to the file, resolved) with an optional URI prefix, given a trailing slash."""
    (site / "files").mkdir()
    (site / "link").symlink_to(site / "files")
    text = EXTERNAL + "server:\n  x_sendfile_roots: [files, 'link=/protected', '/tmp=/t/']\n"
    roots = load_config(str(write(site, text))).server.x_sendfile_roots
    real = os.path.realpath(site / "files")
    assert roots == (SendfileRoot(real), SendfileRoot(real, "/protected/"), SendfileRoot(os.path.realpath("/tmp"), "/t/"))
    assert load_config(str(write(site, EXTERNAL))).server.x_sendfile_roots == ()


def test_text_given_is_not_read_again(site: Path) -> None:
    """load_config with the text validates that text under the file's name, not what the file now holds."""
    path = write(site, "php: [broken\n")
    config = load_config(str(path), "server:\n  workers: 2\n" + EXTERNAL)
    assert (config.source, config.server.workers) == (str(path), 2)


def test_http2_can_be_switched_off(site: Path) -> None:
    """server.http2: false reaches the ServerConfig; absent, HTTP/2 is on."""
    assert load_config(str(write(site, "server:\n  http2: false\n" + EXTERNAL))).server.http2 is False
    assert load_config(str(write(site, EXTERNAL))).server.http2 is True


# -- several php-fpm backends --------------------------------------------------------------------


def test_fpm_socket_list_is_several_backends(site: Path) -> None:
    """A list in php.fpm_socket is several backends, each of weight 1 with php.worker_pool_size connections."""
    config = load_config(str(write(site, "php:\n  worker_pool_size: 6\n  fpm_socket: [10.0.0.2:9000, /run/php.sock]\n")))
    assert config.php.fpm_socket is None
    assert config.php.backends == (BackendConfig("10.0.0.2:9000", 1, 6, False), BackendConfig("/run/php.sock", 1, 6, False))
    assert (config.php.mode, config.php.external_backends) == ("external", config.php.backends)


def test_backends_with_weight_pool_size_and_drain(site: Path) -> None:
    """php.backends entries take address, weight, pool_size (default worker_pool_size) and drain; affinity and pings as written."""
    text = """php:
  worker_pool_size: 4
  backends:
    - address: 10.0.0.2:9000
      pool_size: 4
    - {address: "tcp:host=10.0.0.3:port=9000", weight: 2, pool_size: 8}
    - {address: 10.0.0.4:9000, drain: true}
  session_affinity: true
  session_cookie: SID
  ping_path: /ping
  ping_interval: 1.5
timeouts: {ping: 0.5}
"""
    config = load_config(str(write(site, text)))
    assert config.php.backends == (
        BackendConfig("10.0.0.2:9000", 1, 4, False),
        BackendConfig("tcp:host=10.0.0.3:port=9000", 2, 8, False),
        BackendConfig("10.0.0.4:9000", 1, 4, True),
    )
    php = config.php
    assert (php.session_affinity, php.session_cookie, php.ping_path, php.ping_interval) == (True, "SID", "/ping", 1.5)
    assert config.timeouts.ping == 0.5


def test_single_fpm_socket_keeps_its_meaning(site: Path) -> None:
    """A string in php.fpm_socket is the one external php-fpm, as before; its backend list is that address."""
    config = load_config(str(write(site, EXTERNAL)))
    assert (config.php.fpm_socket, config.php.backends) == ("127.0.0.1:9000", ())
    assert config.php.external_backends == (BackendConfig("127.0.0.1:9000", 1, 16, False),)
    assert (config.php.session_affinity, config.php.session_cookie, config.php.ping_path) == (False, "PHPSESSID", None)


BACKEND_ERRORS = [
    ("php:\n  fpm_socket: []\n", "php.fpm_socket", 2, "must name at least one php-fpm address"),
    ("php:\n  fpm_socket: 9000\n", "php.fpm_socket", 2, "must be an address, a list of addresses, or null, not the number 9000"),
    ("php:\n  fpm_socket:\n    - 10.0.0.2:9000\n    - 5\n", "php.fpm_socket[1]", 4, "must be a string, not the number 5"),
    ("php:\n  fpm_socket: [10.0.0.2:9000, 'tcp:host=10.0.0.2:port=9000']\n", "php.fpm_socket[1]", 2,
     "the same php-fpm as php.fpm_socket[0]"),
    ("php:\n  fpm_socket: 10.0.0.2:9000\n  backends: [{address: 10.0.0.3:9000}]\n", "php.backends", 3,
     "give php.fpm_socket or php.backends, not both"),
    ("php:\n  backends: []\n", "php.backends", 2, "must be a list of backends (each with an address), not a list"),
    ("php:\n  backends: [10.0.0.2:9000]\n", "php.backends[0]", 2,
     "must be a mapping with an address (and weight, pool_size, drain), not the string '10.0.0.2:9000'"),
    ("php:\n  backends:\n    - weight: 2\n", "php.backends[0]", 3, "has no address"),
    ("php:\n  backends:\n    - address: 10.0.0.2:9000\n      wieght: 2\n", "php.backends[0].wieght", 4,
     "unknown key; did you mean 'weight'?"),
    ("php:\n  backends:\n    - address: 10.0.0.2:9000\n      weight: 0\n", "php.backends[0].weight", 4, "must be at least 1, not 0"),
    ("php:\n  backends:\n    - address: 10.0.0.2:9000\n      weight: 101\n", "php.backends[0].weight", 4, "must be at most 100, not 101"),
    ("php:\n  backends:\n    - address: 10.0.0.2:9000\n      pool_size: many\n", "php.backends[0].pool_size", 4,
     "must be an integer, not the string 'many'"),
    ("php:\n  backends:\n    - address: 10.0.0.2:9000\n      drain: 'yes'\n", "php.backends[0].drain", 4,
     "must be true or false, not the string 'yes'"),
    ("php:\n  backends:\n    - address: 'unix:'\n", "php.backends[0].address", 3, "not a php-fpm address: no socket path in 'unix:'"),
    ("php:\n  backends:\n    - address: 10.0.0.2:9000\n    - address: 10.0.0.2:9000\n", "php.backends[1].address", 4,
     "the same php-fpm as php.backends[0]"),
    ("php:\n  backends:\n    - {address: 10.0.0.2:9000, drain: true}\n", "php.backends", 2,
     "every backend drains: at least one must take requests"),
    ("php:\n  fpm_socket: 10.0.0.2:9000\n  session_affinity: true\n", "php.session_affinity", 3,
     "needs several php-fpm backends (a list in php.fpm_socket, or php.backends)"),
    ("php:\n  fpm_socket: [10.0.0.2:9000]\n  session_cookie: 'a=b'\n", "php.session_cookie", 3, "is not a cookie name: 'a=b'"),
    ("php:\n  fpm_socket: [10.0.0.2:9000]\n  ping_path: ping\n", "php.ping_path", 3, "must start with '/', not 'ping'"),
    ("php:\n  fpm_socket: [10.0.0.2:9000]\n  ping_interval: 0\n", "php.ping_interval", 3, "must be more than zero seconds, not 0"),
    ("php:\n  fpm_socket: [10.0.0.2:9000]\ntimeouts:\n  ping: -1\n", "timeouts.ping", 4, "must be more than zero seconds, not -1"),
]


@pytest.mark.parametrize(("text", "key", "line", "problem"), BACKEND_ERRORS, ids=[e[1] + ":" + e[3][:30] for e in BACKEND_ERRORS])
def test_backend_errors_name_file_key_and_line(site: Path, text: str, key: str, line: int, problem: str) -> None:
    """Each wrong backend setting gives exactly "<file>, line <n>: <key>: <problem>"."""
    assert error_for(site, text) == f"{site / 'fephp.yaml'}, line {line}: {key}: {problem}"


def test_trusted_proxies_and_real_ip_header(site: Path) -> None:
    """trusted_proxies takes addresses, ranges and unix:; real_ip_header one of three names in any case; bad ones name their line."""
    text = "server:\n  trusted_proxies: [10.0.0.0/8, 192.0.2.7, '2001:db8::/32', 'unix:']\n  real_ip_header: x-real-ip\n"
    server = load_config(str(write(site, text + EXTERNAL))).server
    assert (server.trusted_proxies, server.real_ip_header) == (("10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "unix:"), "X-Real-IP")
    assert load_config(str(write(site, EXTERNAL))).server.real_ip_header == "X-Forwarded-For"
    path = site / "fephp.yaml"
    assert error_for(site, "server:\n  trusted_proxies:\n    - 10.0.0.1\n    - proxy.example\n" + EXTERNAL) == (
        f"{path}, line 4: server.trusted_proxies[1]: must be an IP address, a CIDR range (10.0.0.0/8) or 'unix:',"
        " not 'proxy.example'"
    )
    assert error_for(site, "server:\n  real_ip_header: X-Client-IP\n" + EXTERNAL) == (
        f"{path}, line 2: server.real_ip_header: must be one of X-Forwarded-For, Forwarded, X-Real-IP,"
        " not the string 'X-Client-IP'"
    )


@pytest.mark.parametrize("engine", ["pyopenssl", "stdlib"])
def test_tls_engine(site: Path, engine: str) -> None:
    """server.tls_engine takes stdlib (the default), whose ssl: listeners load through the standard library, or pyopenssl."""
    pem = self_signed_pem(site)
    text = f"server:\n  tls_engine: {engine}\n  listen: ['ssl:0:privateKey={pem}']\n" + EXTERNAL
    assert (load_config(str(write(site, EXTERNAL))).server.tls_engine, load_config(str(write(site, text))).server.tls_engine) == (
        "stdlib", engine)


def test_tls_engine_unknown(site: Path) -> None:
    """Any other tls_engine is an error at its line naming the two engines."""
    assert error_for(site, "server:\n  tls_engine: openssl\n" + EXTERNAL) == (
        f"{site / 'fephp.yaml'}, line 2: server.tls_engine: must be one of pyopenssl, stdlib, not the string 'openssl'"
    )


def test_tls_engine_stdlib_refuses_what_ssl_cannot_load(site: Path) -> None:
    """With tls_engine stdlib, a dhParameters file the standard library cannot read is an error at the listen item's line."""
    pem = self_signed_pem(site)
    (site / "dh.pem").write_text("not DH parameters\n")
    text = f"server:\n  tls_engine: stdlib\n  listen:\n    - ssl:0:privateKey={pem}:dhParameters={site / 'dh.pem'}\n" + EXTERNAL
    message = error_for(site, text)
    assert message.startswith(
        f"{site / 'fephp.yaml'}, line 4: server.listen[0]: the standard library's ssl (server.tls_engine: stdlib) cannot load"
    ), message
