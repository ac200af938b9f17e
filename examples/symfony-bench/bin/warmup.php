<?php
// Compile the container and warm the cache (routes, Twig templates) before serving, as `cache:warmup` does in a
// deployment: php bin/warmup.php (APP_CACHE_DIR chooses the folder).

declare(strict_types=1);

require dirname(__DIR__) . '/bootstrap.php';

$kernel = new App\Kernel('prod', false);
$kernel->boot();
$warmer = $kernel->getContainer()->get('cache_warmer');
$warmer->enableOptionalWarmers(); // as cache:warmup does: routes and Twig templates too
$warmer->warmUp($kernel->getCacheDir());
echo $kernel->getCacheDir(), "\n";
