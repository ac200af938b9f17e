<?php
// The front controller: every path that names no file ends here (try_files ... /index.php).
header('Content-Type: text/plain; charset=utf-8');
echo "fephp benchmark front controller\n";
echo "path: ", parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH), "\n";
