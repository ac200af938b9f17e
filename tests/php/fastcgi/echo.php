<?php
// Reads the whole body and answers its length and sha256, so large bodies can be checked by hash.
header('Content-Type: text/plain');
$in = fopen('php://input', 'rb');
$ctx = hash_init('sha256');
$n = 0;
while (!feof($in)) {
    $chunk = fread($in, 65536);
    if ($chunk === false) { break; }
    $n += strlen($chunk);
    hash_update($ctx, $chunk);
}
echo $n, ' ', hash_final($ctx);
