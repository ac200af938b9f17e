<?php
// The worker's entry point without Composer: fephp's Symfony Runtime serving app.php (see README.md).
// A Composer app instead runs its own public/index.php with APP_RUNTIME='Fephp\Worker\SymfonyRuntime'.

declare(strict_types=1);

require __DIR__ . '/../../php/fephp-symfony-runtime.php';

exit(\Fephp\Worker\run_symfony(__DIR__ . '/app.php', ['project_dir' => __DIR__, 'disable_dotenv' => true]));
