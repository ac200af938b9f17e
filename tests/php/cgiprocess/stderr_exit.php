<?php
fwrite(fopen("php://stderr", "w"), "a line for the log\n");  // STDERR is CLI-only
echo "some output";
exit(3);
