<?php
// Counts this session's requests in PHP's file sessions (one folder per host): 1 again means the session was lost.
session_start();
$_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
header('Content-Type: text/plain');
echo getmypid(), ' ', $_SESSION['n'];
