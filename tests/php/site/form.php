<?php
// A POST form handler that sets two cookies and echoes what it got.
setcookie('a', '1');
setcookie('b', '2');
header('Content-Type: application/json');
echo json_encode(['post' => $_POST, 'cookies' => $_COOKIE, 'method' => $_SERVER['REQUEST_METHOD']]);
