<?php
// A page that preloads its CSS and JS (?links=0: none), and on request sets a cookie, varies, sleeps or waits.
header('Content-Type: text/html; charset=UTF-8');
if (($_GET['links'] ?? '1') !== '0') {
    header('Link: </static/style.css>; rel=preload; as=style', false);
    header('Link: </static/app.js>; rel=preload; as=script, <https://cdn.example>; rel=preconnect', false);
    header('Link: </about>; rel=next', false);
}
if (!empty($_GET['cookie'])) { setcookie('session', 'abc'); }
if (!empty($_GET['vary'])) { header('Vary: Cookie'); }
if (!empty($_GET['status'])) { http_response_code((int)$_GET['status']); }
if (!empty($_GET['ms'])) { usleep((int)$_GET['ms'] * 1000); }
// ?wait=1: answer only once hints.go exists beside it (10 s at most), which the test creates after it has read the 103.
if (!empty($_GET['wait'])) {
    for ($i = 0; $i < 1000 && !file_exists(__DIR__ . '/hints.go'); $i++) { usleep(10000); clearstatcache(); }
}
echo "<!DOCTYPE html><title>hints</title>\n";
