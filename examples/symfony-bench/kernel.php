<?php
// What a Symfony front controller returns to the runtime: the closure that makes the kernel (prod, no debug).

declare(strict_types=1);

return static fn (array $context): \App\Kernel => new \App\Kernel('prod', false);
