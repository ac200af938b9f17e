<?php
// Appends a line to the file ?log= names (one per run of this script), then sleeps ?ms= milliseconds.
file_put_contents($_GET['log'], getmypid() . "\n", FILE_APPEND | LOCK_EX);
usleep((isset($_GET['ms']) ? (int)$_GET['ms'] : 0) * 1000);
header('Content-Type: text/plain');
echo 'done ', getmypid();
