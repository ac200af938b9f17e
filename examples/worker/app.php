<?php
// A small PSR-7 app run as a fephp worker: booted once, then one request after another (see README.md).
//
// Routes:
//   GET  /hello    JSON: the query, the cookies, the client address, the request id, a header, the protocol,
//                  how many requests this worker has served and how many of its streams the front stopped
//   POST /form     JSON: the parsed form and, for each uploaded file, its name, type, size and md5
//   POST /hash     JSON: the body's length and sha256
//   GET  /big      ?size=N: N bytes of "0123456789" repeated (over 1 MiB, the library sends it in several frames)
//   GET  /visit    sets the cookies visits=<n + 1> and theme=dark (two Set-Cookie headers)
//   GET  /stream   text/plain sent in pieces as they are made: "one\n", "two\n", "three\n"
//   GET  /bigstream  one piece of 2 MiB + 1 bytes yielded at once: the library cuts it into frames of 1 MiB
//   GET  /endless  text/plain "tick\n" pieces until the front stops the stream (at most 100000)
//   GET  /fail     the app throws: the worker reports the error and serves the next request
//   GET  /noisy    the app echoes (stdout is the protocol's: the library moves it to stderr), then answers "quiet"
// Anything else is a 404.

declare(strict_types=1);

require __DIR__ . '/../../php/fephp-worker.php';

use Fephp\Worker\Worker;
use Nyholm\Psr7\Factory\Psr17Factory;
use Psr\Http\Message\ResponseInterface;
use Psr\Http\Message\ServerRequestInterface;
use Psr\Http\Message\UploadedFileInterface;

$worker = Worker::create();
$http = new Psr17Factory(); // booted once: everything here is kept between requests
$served = 0;
$streamsStopped = 0; // streams the front stopped because its client went away

function json(Psr17Factory $http, mixed $data, int $status = 200): ResponseInterface
{
    return $http->createResponse($status)
        ->withHeader('Content-Type', 'application/json')
        ->withBody($http->createStream(json_encode($data, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES)));
}

/** @return array<mixed> each upload as a plain description, nested as the form named them */
function describe(array $files): array
{
    return array_map(static fn ($file) => $file instanceof UploadedFileInterface ? [
        'name' => $file->getClientFilename(),
        'type' => $file->getClientMediaType(),
        'size' => $file->getSize(),
        'error' => $file->getError(),
        'md5' => $file->getError() === UPLOAD_ERR_OK ? md5((string)$file->getStream()) : null,
    ] : describe($file), $files);
}

function handle(ServerRequestInterface $request, Psr17Factory $http, int $served, int $stopped): ResponseInterface
{
    $path = $request->getUri()->getPath();
    switch ($path) {
        case '/hello':
            return json($http, [
                'query' => $request->getQueryParams(),
                'cookies' => $request->getCookieParams(),
                'remoteAddr' => $request->getServerParams()['REMOTE_ADDR'],
                'requestUri' => $request->getServerParams()['REQUEST_URI'],
                'requestId' => $request->getAttribute('requestId'),
                'accept' => $request->getHeaderLine('Accept'),
                'host' => $request->getUri()->getHost(),
                'protocol' => $request->getProtocolVersion(),
                'served' => $served,
                'streamsStopped' => $stopped,
            ]);
        case '/form':
            return json($http, [
                'form' => $request->getParsedBody(),
                'files' => describe($request->getUploadedFiles()),
            ]);
        case '/hash':
            $body = (string)$request->getBody();
            return json($http, ['length' => strlen($body), 'sha256' => hash('sha256', $body)]);
        case '/big':
            $size = (int)($request->getQueryParams()['size'] ?? 0);
            return $http->createResponse(200)
                ->withHeader('Content-Type', 'application/octet-stream')
                ->withBody($http->createStream(substr(str_repeat('0123456789', intdiv($size, 10) + 1), 0, $size)));
        case '/visit':
            $visits = (int)($request->getCookieParams()['visits'] ?? 0) + 1;
            return $http->createResponse(200)
                ->withHeader('Content-Type', 'text/plain')
                ->withAddedHeader('Set-Cookie', "visits=$visits; Path=/; HttpOnly")
                ->withAddedHeader('Set-Cookie', 'theme=dark; Path=/; SameSite=Lax')
                ->withBody($http->createStream("visit $visits"));
        case '/fail':
            throw new RuntimeException('deliberate failure');
        case '/noisy':
            echo "stray output from the app\n";
            return $http->createResponse(200)->withBody($http->createStream('quiet'));
        default:
            return json($http, ['error' => "no route for $path"], 404);
    }
}

/** @return Generator<string> pieces made one at a time: each leaves for the front before the next is made */
function pieces(string $path): Generator
{
    if ($path === '/bigstream') {
        yield str_repeat('x', (2 << 20) + 1);
        return;
    }
    if ($path === '/stream') {
        yield "one\n";
        yield "two\n";
        yield "three\n";
        return;
    }
    for ($i = 0; $i < 100000; $i++) {
        yield "tick\n";
    }
}

while ($request = $worker->waitRequest()) {
    try {
        $path = $request->getUri()->getPath();
        if (in_array($path, ['/stream', '/bigstream', '/endless'], true)) {
            $head = $http->createResponse(200)->withHeader('Content-Type', 'text/plain');
            if (!$worker->respondStream($head, pieces($path))) {
                $streamsStopped++;
            }
        } else {
            $worker->respond(handle($request, $http, ++$served, $streamsStopped));
        }
    } catch (Throwable $e) {
        // The front logs the message and answers 500 without it; the trace stays in the worker's stderr.
        fwrite(STDERR, (string)$e . "\n");
        $worker->error($e::class . ': ' . $e->getMessage());
    }
}
