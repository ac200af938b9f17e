"""fephp: a front server for PHP applications, speaking HTTP to browsers and FastCGI to PHP-FPM."""

__version__ = "0.1.0"
