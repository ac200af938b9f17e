<?php
// error_log() with no error_log ini setting goes to the web server: php-fpm
// sends it as FastCGI STDERR records (fastcgi.logging, on by default).
error_log("to-stderr: " . ($_GET['tag'] ?? 'none'));
header('Content-Type: text/plain');
echo "ok";
