<?php
// A PSR-7 app on php/fephp-worker.php for tests/integration/test_worker_backend.py: booted once, then one request
// after another, each answer naming the worker's pid so that a test can tell a fresh worker from a kept one.
//
// Environment: CRASH_AT_BOOT=1 exits with status 3 before the pid handshake (a worker that cannot boot).
// Routes:
//   GET /hello    JSON: pid, served (requests before this one), requestId, remoteAddr, https, uri, cookies, method
//   GET /cookies  "two cookies", with Set-Cookie a=1 and Set-Cookie b=2 apart
//   GET /stream   text/plain "one\n", then, once the file ?gate= names exists (the test makes it after reading
//                 "one\n"; at most 20 s), "two\n"
//   GET /grow     keeps ?mb= MiB more in memory for the worker's life, answers its pid
//   GET /stuck    never answers (sleeps an hour): exec_timeout's case
//   POST /echo    the body's length and sha256

declare(strict_types=1);

if (getenv('CRASH_AT_BOOT') === '1') {
    fwrite(STDERR, "booting failed on purpose\n");
    exit(3);
}

require __DIR__ . '/../../../php/fephp-worker.php';

use Fephp\Worker\Worker;
use Nyholm\Psr7\Factory\Psr17Factory;

$worker = Worker::create();
$http = new Psr17Factory();
$served = 0;
$kept = [];

function json_response(Psr17Factory $http, array $data): Psr\Http\Message\ResponseInterface
{
    return $http->createResponse(200)
        ->withHeader('Content-Type', 'application/json')
        ->withBody($http->createStream(json_encode($data, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES)));
}

function gated(string $gate): Generator
{
    yield "one\n";
    for ($i = 0; $i < 2000 && !file_exists($gate); $i++) {
        usleep(10000);
        clearstatcache();
    }
    yield "two\n";
}

while ($request = $worker->waitRequest()) {
    $query = $request->getQueryParams();
    $server = $request->getServerParams();
    switch ($request->getUri()->getPath()) {
        case '/hello':
            $worker->respond(json_response($http, [
                'pid' => getmypid(),
                'served' => $served,
                'requestId' => $request->getAttribute('requestId'),
                'remoteAddr' => $server['REMOTE_ADDR'],
                'https' => $server['HTTPS'] ?? '',
                'uri' => (string)$request->getUri(),
                'cookies' => $request->getCookieParams(),
                'method' => $request->getMethod(),
            ]));
            break;
        case '/cookies':
            $worker->respond($http->createResponse(200)
                ->withHeader('Content-Type', 'text/plain')
                ->withAddedHeader('Set-Cookie', 'a=1; Path=/')
                ->withAddedHeader('Set-Cookie', 'b=2; Path=/; HttpOnly')
                ->withBody($http->createStream('two cookies')));
            break;
        case '/stream':
            $worker->respondStream(
                $http->createResponse(200)->withHeader('Content-Type', 'text/plain'),
                gated((string)($query['gate'] ?? '')),
            );
            break;
        case '/grow':
            $kept[] = str_repeat('x', (int)($query['mb'] ?? 1) << 20);
            $worker->respond(json_response($http, ['pid' => getmypid()]));
            break;
        case '/stuck':
            sleep(3600);
            break;
        case '/echo':
            $body = (string)$request->getBody();
            $worker->respond(json_response($http, ['length' => strlen($body), 'sha256' => hash('sha256', $body)]));
            break;
        default:
            $worker->respond($http->createResponse(404)->withBody($http->createStream('no such route')));
    }
    $served++;
}
