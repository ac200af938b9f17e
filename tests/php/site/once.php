<?php
// Appends ?tag= to runs.log beside it, once per run, then sleeps ?ms= milliseconds:
// the fault tests count the lines to see that PHP never ran a request twice.
$tag = preg_replace('/[^A-Za-z0-9_.-]/', '', isset($_GET['tag']) ? $_GET['tag'] : 'none');
file_put_contents(__DIR__ . '/runs.log', $tag . "\n", FILE_APPEND | LOCK_EX);
usleep((isset($_GET['ms']) ? (int)$_GET['ms'] : 0) * 1000);
header('Content-Type: text/plain');
echo 'ran ', $tag, ' ', strlen(file_get_contents('php://input'));
