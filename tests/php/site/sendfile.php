<?php
// Hands a file to the front with ?h= (X-Sendfile or X-Accel-Redirect) naming ?v=, or, with ?symfony=PATH,
// the way Symfony's BinaryFileResponse does from X-Sendfile-Type and X-Accel-Mapping. Its own body must never arrive.
if (isset($_GET['type'])) { header('Content-Type: ' . $_GET['type']); }
if (isset($_GET['disp'])) { header('Content-Disposition: ' . $_GET['disp']); }
header('Cache-Control: private, max-age=60');
if (isset($_GET['symfony'])) {
    $path = realpath($_GET['symfony']);
    $type = $_SERVER['HTTP_X_SENDFILE_TYPE'] ?? '';
    if (strtolower($type) === 'x-accel-redirect') {
        foreach (explode(',', $_SERVER['HTTP_X_ACCEL_MAPPING'] ?? '') as $part) {
            [$prefix, $location] = array_map('trim', explode('=', $part, 2));
            if (str_starts_with($path, $prefix)) {
                header('X-Accel-Redirect: ' . $location . substr($path, strlen($prefix)));
                break;
            }
        }
    } elseif ($type !== '') {
        header($type . ': ' . $path);
    }
} else {
    header($_GET['h'] . ': ' . $_GET['v']);
}
header('Content-Length: 16');
echo "PHP's own body!\n";
