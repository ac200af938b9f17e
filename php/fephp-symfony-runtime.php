<?php
// fephp's Symfony Runtime, from the worker's side: a Symfony HttpKernel app served request after request over
// php/fephp-worker.php's Connection (RoadRunner's worker protocol), HttpFoundation in and out, no PSR-7.
//
// A Composer app: autoload this file (composer.json "autoload": {"files": [...]}) and start the worker with
//     APP_RUNTIME='Fephp\Worker\SymfonyRuntime' php public/index.php
// (Symfony's autoload_runtime.php takes the runtime class from APP_RUNTIME). Without Composer (Debian's
// php-symfony-runtime and php-symfony-http-kernel on the include_path), a worker script does what
// autoload_runtime.php does:
//     require '/path/to/fephp/php/fephp-symfony-runtime.php';
//     exit(\Fephp\Worker\run_symfony(__DIR__ . '/app.php'));     // app.php returns fn (array $context) => $kernel
//
// Each request becomes a Request built from the context alone (query, form, cookies, uploads as UploadedFile in
// test mode, since PHP did not receive them, server params as php-fpm gives them, the context's attributes as
// request attributes); the kernel handles it, the response goes back (cookies as several Set-Cookie), then
// terminate() and, for a kernel that has it, reset(). A StreamedResponse's output leaves as it is echoed, one frame
// per output call; when the front stops the stream its output is dropped (the callback still runs to its end).
// An exception the kernel lets through becomes an ERROR frame and the worker goes on.

declare(strict_types=1);

namespace Fephp\Worker;

require_once __DIR__ . '/fephp-worker.php';

use Symfony\Component\HttpFoundation\BinaryFileResponse;
use Symfony\Component\HttpFoundation\File\UploadedFile;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpFoundation\Response;
use Symfony\Component\HttpFoundation\StreamedResponse;
use Symfony\Component\HttpKernel\HttpKernelInterface;
use Symfony\Component\HttpKernel\TerminableInterface;
use Symfony\Component\Runtime\RunnerInterface;

/** Load Debian's Symfony components from the include_path unless an autoloader (Composer's) already has them. */
function load_symfony(): void
{
    $needed = [
        \Symfony\Component\Runtime\SymfonyRuntime::class => 'Symfony/Component/Runtime/autoload.php',
        \Symfony\Component\HttpKernel\HttpKernel::class => 'Symfony/Component/HttpKernel/autoload.php',
    ];
    foreach ($needed as $class => $autoload) {
        if (class_exists($class)) {
            continue;
        }
        $found = stream_resolve_include_path($autoload);
        if ($found === false) {
            fwrite(STDERR, "fephp-symfony-runtime: $class not found ($autoload is not on the include_path "
                . get_include_path() . "): apt-get install php-symfony-runtime php-symfony-http-kernel, or load"
                . " Composer's autoloader first\n");
            exit(1);
        }
        require_once $found;
    }
}

load_symfony();

/** Symfony's runtime, but an HttpKernel app is served over the worker protocol instead of once from globals. */
class SymfonyRuntime extends \Symfony\Component\Runtime\SymfonyRuntime
{
    public function getRunner(?object $application): RunnerInterface
    {
        if ($application instanceof HttpKernelInterface) {
            return new KernelRunner($application, new Connection(STDIN, STDOUT));
        }
        return parent::getRunner($application);
    }
}

/** The worker loop: one request at a time through the kernel, until the front says stop. */
final class KernelRunner implements RunnerInterface
{
    public function __construct(private HttpKernelInterface $kernel, private Connection $connection)
    {
    }

    public function run(): int
    {
        guard_stdout();
        while ($incoming = $this->connection->waitRequest()) {
            $request = self::request($incoming);
            try {
                $response = $this->kernel->handle($request);
                $this->send($response);
                if ($this->kernel instanceof TerminableInterface) {
                    $this->kernel->terminate($request, $response);
                }
            } catch (\Throwable $e) {
                fwrite(STDERR, (string)$e . "\n");
                if ($this->connection->state() !== State::Idle) { // not answered yet: the front still waits
                    $this->connection->error($e::class . ': ' . $e->getMessage());
                }
            }
            if ($this->kernel instanceof \Symfony\Contracts\Service\ResetInterface) {
                $this->kernel->reset();
            }
        }
        return 0;
    }

    /** The HttpFoundation request of *incoming*, from its context alone (no globals: PHP's CLI has none). */
    public static function request(Incoming $incoming): Request
    {
        return new Request(
            $incoming->query(),
            $incoming->form() ?? [],
            $incoming->attributes(),
            $incoming->cookies(),
            self::files($incoming->uploads()),
            $incoming->serverParams(),
            $incoming->parsed() ? '' : $incoming->body,
        );
    }

    /**
     * @param array<mixed> $tree
     * @return array<mixed>
     */
    private static function files(array $tree): array
    {
        $out = [];
        foreach ($tree as $key => $node) {
            if (!is_array($node)) {
                throw new ProtocolError("upload $key is neither a file nor a tree of files");
            }
            // test: true, as PHP did not receive the file itself: move() renames instead of move_uploaded_file().
            $out[$key] = Incoming::isFile($node)
                ? new UploadedFile((string)$node['tmpName'], (string)($node['name'] ?? ''),
                    isset($node['mime']) ? (string)$node['mime'] : null, (int)$node['error'], true)
                : self::files($node);
        }
        return $out;
    }

    private function send(Response $response): void
    {
        $headers = $response->headers->allPreserveCaseWithoutCookies();
        foreach ($response->headers->getCookies() as $cookie) {
            $headers['Set-Cookie'][] = (string)$cookie;
        }
        $status = $response->getStatusCode();
        if (!$response instanceof StreamedResponse && !$response instanceof BinaryFileResponse) {
            $this->connection->respond($status, $headers, (string)$response->getContent());
            return;
        }
        $this->connection->begin($status, $headers);
        $connection = $this->connection;
        // Chunk size 1: every echo of the callback leaves at once, as flush() would send it under php-fpm.
        ob_start(static function (string $buffer) use ($connection): string {
            if ($buffer !== '') {
                $connection->write($buffer);
            }
            return '';
        }, 1);
        try {
            $response->sendContent();
        } finally {
            ob_end_flush();
        }
        $this->connection->end();
    }
}

/**
 * What Symfony's autoload_runtime.php does, for an app without Composer: *script* returns a closure whose
 * arguments the runtime resolves (array $context: $_SERVER and $_ENV) and which returns the kernel.
 *
 * @param array<string, mixed> $options SymfonyRuntime's options (env, debug, project_dir, disable_dotenv...)
 */
function run_symfony(string $script, array $options = []): int
{
    $app = require $script;
    if (!is_object($app)) {
        throw new \TypeError("$script returned " . get_debug_type($app) . ', expected a closure');
    }
    $runtime = new SymfonyRuntime($options);
    [$app, $args] = $runtime->getResolver($app)->resolve();
    return $runtime->getRunner($app(...$args))->run();
}
