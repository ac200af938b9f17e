<?php
// Class loading without Composer: Debian's Symfony bundles and Twig from the include_path, the App\ classes from src/.

declare(strict_types=1);

foreach (['Symfony/Bundle/FrameworkBundle/autoload.php', 'Symfony/Bundle/TwigBundle/autoload.php',
          'Symfony/Component/Routing/autoload.php'] as $autoload) {
    if (stream_resolve_include_path($autoload) === false) {
        fwrite(STDERR, "symfony-bench: $autoload is not on the include_path: apt-get install "
            . "php-symfony-framework-bundle php-symfony-twig-bundle php-symfony-routing php-twig\n");
        exit(1);
    }
    require_once $autoload;
}

spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'App\\')) {
        $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, 4)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
