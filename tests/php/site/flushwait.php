<?php
// Sends a first line, then waits (10 s at most) for flushwait.go beside it, which the test creates once it has read that line.
header('Content-Type: text/plain');
// Debian's php.ini buffers 4 KiB of output; flush() alone would not send it.
while (ob_get_level() > 0) { ob_end_flush(); }
echo "first\n";
flush();
$go = __DIR__ . '/flushwait.go';
for ($i = 0; $i < 1000 && !file_exists($go); $i++) {
    usleep(10000);
    clearstatcache();
}
echo file_exists($go) ? "last\n" : "gave up waiting\n";
