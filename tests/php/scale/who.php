<?php
// Which php-fpm child answered, and whom PHP saw as the client; sleeps ?ms= milliseconds first.
usleep((isset($_GET['ms']) ? (int)$_GET['ms'] : 0) * 1000);
header('Content-Type: text/plain');
echo getmypid(), ' ', $_SERVER['REMOTE_ADDR'];
