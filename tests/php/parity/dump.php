<?php
// Everything PHP learnt from the request, as JSON, for comparing front servers:
// $_SERVER, $_GET, $_POST, $_COOKIE, $_FILES (name, type, size, error, sha256),
// the body as php://input saw it, and the response headers PHP set.
// ?set_cookie=1 sets two cookies, ?location=URL redirects, ?status=N sets one,
// ?multi_header=1 repeats Link and Vary, ?accel=1 sends nginx's X-Accel-* headers.
if (isset($_GET['set_cookie'])) {
    setcookie('first', 'one', ['path' => '/']);
    setcookie('second', 'two', ['path' => '/', 'httponly' => true]);
}
if (isset($_GET['status'])) {
    http_response_code((int) $_GET['status']);
}
if (isset($_GET['location'])) {
    header('Location: ' . $_GET['location']);
}
if (isset($_GET['multi_header'])) {
    header('Link: </a.css>; rel=preload', false);
    header('Link: </b.js>; rel=preload', false);
    header('Vary: Accept');
    header('Vary: Cookie', false);
}
if (isset($_GET['accel'])) {
    header('X-Accel-Buffering: no');
    header('X-Accel-Expires: 60');
}
header('Content-Type: application/json; charset=utf-8');
header('X-Parity: yes');
$files = [];
foreach ($_FILES as $field => $f) {
    $files[$field] = [
        'name' => $f['name'],
        'type' => $f['type'],
        'size' => $f['size'],
        'error' => $f['error'],
        'sha256' => $f['error'] === UPLOAD_ERR_OK ? hash_file('sha256', $f['tmp_name']) : null,
    ];
}
$input = file_get_contents('php://input');
$server = $_SERVER;
ksort($server);
echo json_encode([
    'script' => __FILE__,
    'server' => $server,
    'get' => $_GET,
    'post' => $_POST,
    'cookie' => $_COOKIE,
    'files' => $files,
    'input' => ['length' => strlen($input), 'sha256' => hash('sha256', $input)],
    'headers' => headers_list(),
], JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE | JSON_PRETTY_PRINT), "\n";
