<?php
// Appends one line (its pid) to the file ?log= names, once per run, then sleeps ?ms= milliseconds:
// a test counts the lines to see how often PHP ran the request.
file_put_contents($_GET['log'], getmypid() . "\n", FILE_APPEND | LOCK_EX);
usleep((isset($_GET['ms']) ? (int)$_GET['ms'] : 0) * 1000);
header('Content-Type: text/plain');
echo 'ran';
