<?php
// Front controller: answers the routing facts as JSON.
header('Content-Type: application/json');
echo json_encode([
    'script' => 'index.php',
    'REQUEST_URI' => $_SERVER['REQUEST_URI'],
    'QUERY_STRING' => $_SERVER['QUERY_STRING'],
    'SCRIPT_NAME' => $_SERVER['SCRIPT_NAME'],
    'PATH_INFO' => $_SERVER['PATH_INFO'] ?? null,
    'DOCUMENT_URI' => $_SERVER['DOCUMENT_URI'] ?? null,
    'GET' => $_GET,
]);
