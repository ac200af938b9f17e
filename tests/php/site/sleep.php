<?php
// Sleeps ?ms= milliseconds, then answers which php-fpm child served it.
usleep((isset($_GET['ms']) ? (int)$_GET['ms'] : 50) * 1000);
header('Content-Type: text/plain');
echo getmypid();
