<?php
declare(strict_types=1);

// A script of its own (not the front controller): /info.php/extra/path must
// run this file with SCRIPT_NAME=/info.php and PATH_INFO=/extra/path
// (RFC 3875, 4.1.5 and 4.1.13).  Deliberately not phpinfo(), which would
// disclose paths, modules and the whole environment.
header('Content-Type: application/json');
header('X-Content-Type-Options: nosniff');
header_remove('X-Powered-By');
echo json_encode(
    [
        'SCRIPT_NAME' => $_SERVER['SCRIPT_NAME'] ?? null,
        'PATH_INFO' => $_SERVER['PATH_INFO'] ?? null,
    ],
    JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES | JSON_HEX_TAG | JSON_HEX_AMP | JSON_INVALID_UTF8_SUBSTITUTE
), "\n";
