<?php
header("Content-Type: application/json");
echo json_encode([
    "server" => $_SERVER,
    "env" => getenv(),
    "memory_limit" => ini_get("memory_limit"),
]);
