<?php
// The same app in fephp's worker mode: fephp's Symfony Runtime boots the kernel once and serves request after
// request over RoadRunner's worker protocol (php.worker.script: examples/symfony-bench/worker.php).

declare(strict_types=1);

require __DIR__ . '/bootstrap.php';
require __DIR__ . '/../../php/fephp-symfony-runtime.php';

exit(\Fephp\Worker\run_symfony(__DIR__ . '/kernel.php', [
    'project_dir' => __DIR__, 'disable_dotenv' => true, 'env' => 'prod', 'debug' => false,
]));
