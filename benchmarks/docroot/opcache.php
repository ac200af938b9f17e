<?php
// The harness checks this before measuring: every front must reach a php-fpm with OPcache on.
$status = function_exists('opcache_get_status') ? opcache_get_status(false) : false;
echo ($status && $status['opcache_enabled']) ? "opcache on\n" : "opcache off\n";
