<?php
// Prints its pid and then says nothing for a minute: for cancel and timeout tests.
echo "pid=", getmypid(), "\n";
while (ob_get_level()) {
    ob_end_flush();  // php.ini's output_buffering would hold the line back
}
flush();
sleep(60);
echo "too late";
