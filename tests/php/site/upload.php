<?php
// A multipart upload: the file's name, size and sha256.
header('Content-Type: application/json');
$f = $_FILES['file'] ?? null;
echo json_encode($f === null ? ['error' => 'no file'] : [
    'name' => $f['name'], 'size' => $f['size'], 'sha256' => hash_file('sha256', $f['tmp_name']),
    'field' => $_POST['field'] ?? null,
]);
