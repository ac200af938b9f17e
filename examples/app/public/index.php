<?php
declare(strict_types=1);

// Front controller: every path that is not a static file or another script
// ends up here, and the path is read from REQUEST_URI (the original request
// target, query string included), as frameworks do.

// PHP's built-in server (`php -S ... index.php`) runs this file for every
// request; hand existing static files back to it, except what a front server
// must never serve (dotfiles, /data/), which falls through to the 404 page.
if (PHP_SAPI === 'cli-server') {
    $local = rawurldecode(explode('?', $_SERVER['REQUEST_URI'], 2)[0]);
    $script = preg_replace('#^(/[^/]+\.php)/.*$#', '$1', $local);
    if ($script !== '/' . basename(__FILE__) && is_file(__DIR__ . $script) && !preg_match('#/\.|^/data/#', $script)) {
        return false;
    }
}

require __DIR__ . '/../src/html.php';
require __DIR__ . '/../src/Router.php';
require __DIR__ . '/../src/handlers.php';

header_remove('X-Powered-By');

$path = explode('?', $_SERVER['REQUEST_URI'] ?? '/', 2)[0];
// Also answer as /index.php/hello/world: strip the script's own name.
$script = $_SERVER['SCRIPT_NAME'] ?? '';
if (str_ends_with($script, '/' . basename(__FILE__)) && ($path === $script || str_starts_with($path, $script . '/'))) {
    $path = substr($path, strlen($script)) ?: '/';
}

$router = new Router();
$router->add('GET', '/', 'home');
$router->add('GET', '/hello/{name}', 'hello');
$router->add('GET', '/form', 'form_show');
$router->add('POST', '/form', 'form_post');
$router->add('GET', '/cookie', 'cookie');
$router->add('GET', '/upload', 'upload_show');
$router->add('POST', '/upload', 'upload_post');
$router->add('GET', '/json', 'environment');
$router->add('POST', '/json', 'environment');
$router->add('GET', '/stream', 'stream');

if (!$router->dispatch($_SERVER['REQUEST_METHOD'] ?? 'GET', $path)) {
    not_found(rawurldecode($path));
}
