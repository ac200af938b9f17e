<?php
// Exactly 1 MiB of body, built once per request (the cost is PHP's, the same for every front).
header('Content-Type: application/octet-stream');
echo str_repeat("0123456789abcdef", 65536);
