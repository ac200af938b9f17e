<?php
// Sends a first line at once, then waits ?ms= milliseconds before the last one.
header('Content-Type: text/plain');
// Debian's php.ini buffers 4 KiB of output; flush() alone would not send it.
while (ob_get_level() > 0) { ob_end_flush(); }
echo "first\n";
flush();
usleep((isset($_GET['ms']) ? (int)$_GET['ms'] : 1000) * 1000);
echo "last\n";
