"""Processes fephp runs: finding the PHP binaries, php-fpm's configuration, the managed php-fpm, the death guard."""
