"""twistd's entry for fephp: ``twistd fephp --config etc/fephp.yaml``."""

from twisted.application.service import ServiceMaker

fephp = ServiceMaker(
    "fephp",
    "fephp.tap",
    "A front server for PHP applications: HTTP in, FastCGI to PHP-FPM out.",
    "fephp",
)
