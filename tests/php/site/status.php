<?php
// A chosen status, and a redirect when asked.
if (isset($_GET['to'])) { header('Location: ' . $_GET['to']); exit; }
http_response_code((int)($_GET['code'] ?? 200));
header('X-Test: yes');
echo "status body";
