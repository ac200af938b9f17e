<?php
header('Content-Type: application/json');
echo json_encode(['SCRIPT_NAME' => $_SERVER['SCRIPT_NAME'], 'PATH_INFO' => $_SERVER['PATH_INFO']]);
