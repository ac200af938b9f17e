<?php
// Sends ?n= bytes of a deterministic pattern (default 8 MiB).
header('Content-Type: application/octet-stream');
$n = isset($_GET['n']) ? (int)$_GET['n'] : 8 * 1024 * 1024;
$block = '';
for ($i = 0; $i < 256; $i++) { $block .= chr($i); }
$block = str_repeat($block, 256);           // 64 KiB
while ($n > 0) {
    $piece = $n >= strlen($block) ? $block : substr($block, 0, $n);
    echo $piece;
    $n -= strlen($piece);
}
