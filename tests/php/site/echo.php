<?php
// Answers the body's length and sha256 and the CONTENT_LENGTH PHP was given.
header('Content-Type: text/plain');
$body = file_get_contents('php://input');
echo strlen($body), ' ', hash('sha256', $body), ' ', $_SERVER['CONTENT_LENGTH'] ?? '-';
