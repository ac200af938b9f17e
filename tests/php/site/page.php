<?php
// An HTML page of about ?kb= KiB (default 60), the same bytes every time; ?etag=1 adds a strong ETag.
header('Content-Type: text/html; charset=UTF-8');
if (!empty($_GET['etag'])) { header('ETag: "page-v1"'); }
if (!empty($_GET['cc'])) { header('Cache-Control: ' . $_GET['cc']); }
$kb = isset($_GET['kb']) ? (int)$_GET['kb'] : 60;
$head = "<!DOCTYPE html>\n<html><head><title>Page</title></head><body>\n";
echo $head;
$sent = strlen($head);
for ($i = 0; $sent < $kb * 1024 && $i < 100000; $i++) {
    $row = "<p class=\"row\">Row $i: the quick brown fox jumps over the lazy dog.</p>\n";
    echo $row;
    $sent += strlen($row);
}
echo "</body></html>\n";
