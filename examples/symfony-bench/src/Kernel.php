<?php
// The app's kernel on FrameworkBundle's micro kernel: two bundles, autowired services, two routes; the container and
// the templates compiled into the cache folder as in production (APP_ENV=prod, APP_DEBUG=0).

declare(strict_types=1);

namespace App;

use App\Controller\PageController;
use Symfony\Bundle\FrameworkBundle\FrameworkBundle;
use Symfony\Bundle\FrameworkBundle\Kernel\MicroKernelTrait;
use Symfony\Bundle\TwigBundle\TwigBundle;
use Symfony\Component\DependencyInjection\Loader\Configurator\ContainerConfigurator;
use Symfony\Component\HttpKernel\Kernel as BaseKernel;
use Symfony\Component\Routing\Loader\Configurator\RoutingConfigurator;

final class Kernel extends BaseKernel
{
    use MicroKernelTrait;

    public function registerBundles(): iterable
    {
        return [new FrameworkBundle(), new TwigBundle()];
    }

    public function getProjectDir(): string
    {
        return dirname(__DIR__);
    }

    /** APP_CACHE_DIR puts the cache elsewhere (the benchmark warms one in its temp folder). */
    public function getCacheDir(): string
    {
        $base = $_SERVER['APP_CACHE_DIR'] ?? getenv('APP_CACHE_DIR') ?: $this->getProjectDir() . '/var/cache';
        return $base . '/' . $this->environment;
    }

    public function getLogDir(): string
    {
        return $this->getCacheDir() . '/log';
    }

    protected function configureContainer(ContainerConfigurator $container): void
    {
        $container->extension('framework', [
            'secret' => 'symfony-bench-not-a-secret',
            'http_method_override' => false,
            'router' => ['utf8' => true],
            'php_errors' => ['log' => true],
        ]);
        $container->extension('twig', [
            'default_path' => '%kernel.project_dir%/templates',
            'strict_variables' => true,
        ]);
        $services = $container->services()->defaults()->autowire()->autoconfigure();
        $services->load('App\\Service\\', __DIR__ . '/Service/');
        $services->load('App\\Controller\\', __DIR__ . '/Controller/')->tag('controller.service_arguments');
    }

    protected function configureRoutes(RoutingConfigurator $routes): void
    {
        $routes->add('catalog_json', '/api/catalog')->controller([PageController::class, 'catalogJson'])->methods(['GET']);
        $routes->add('catalog_html', '/catalog')->controller([PageController::class, 'catalogHtml'])->methods(['GET']);
        $routes->add('pid', '/api/pid')->controller([PageController::class, 'pid'])->methods(['GET']);
    }
}
