<?php
// Holds its php-fpm child for 50 ms: with 8 children a front can reach at most ~160 req/s.
usleep(50000);
echo "slept 50 ms\n";
