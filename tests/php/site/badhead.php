<?php
// Sends a response head PHP lets through and HTTP does not: ?kind= big (a 70 KB header),
// ctl (a control byte in a value) or nocolon (a line without a colon).
$kind = isset($_GET['kind']) ? $_GET['kind'] : '';
if ($kind === 'big') { header('X-Big: ' . str_repeat('a', 70000)); }
if ($kind === 'ctl') { header("X-Ctl: a\x01b"); }
if ($kind === 'nocolon') { header('NoColon'); }
echo 'body';
