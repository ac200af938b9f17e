<?php
// The whole CGI environment PHP received, as JSON.
header('Content-Type: application/json');
echo json_encode($_SERVER);
