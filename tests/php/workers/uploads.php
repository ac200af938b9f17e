<?php
// A PSR-7 app on php/fephp-worker.php for tests/integration/test_worker_uploads.py and test_worker_match.py.
//
// Routes:
//   GET  /api/pid     JSON: the worker's pid and PHP_SAPI ("cli")
//   POST /api/upload  JSON: the parsed form, and for each uploaded file (nested as PHP nests names) its client
//                     name, type, size, error, sha256 of its bytes (computed here) and where the front put it
//   POST /api/crash   exits with status 1 before answering (a worker dying with a request)
//   POST /api/gated   writes the file ?started= names, waits (at most 20 s) until the file ?gate= names exists,
//                     then answers like /api/upload (a request whose client may go away meanwhile)
//   anything else     JSON: the pid and the path (a path under a match prefix with no file behind it)

declare(strict_types=1);

require __DIR__ . '/../../../php/fephp-worker.php';

use Fephp\Worker\Worker;
use Nyholm\Psr7\Factory\Psr17Factory;
use Psr\Http\Message\UploadedFileInterface;

$worker = Worker::create();
$http = new Psr17Factory();

function describe(array $files): array
{
    $out = [];
    foreach ($files as $key => $file) {
        if ($file instanceof UploadedFileInterface) {
            $path = $file->getError() === UPLOAD_ERR_OK ? (string)$file->getStream()->getMetadata('uri') : '';
            $out[$key] = [
                'name' => $file->getClientFilename(),
                'type' => $file->getClientMediaType(),
                'size' => $file->getSize(),
                'error' => $file->getError(),
                'sha256' => $path === '' ? '' : hash_file('sha256', $path),
                'tmp' => $path,
            ];
        } else {
            $out[$key] = describe($file);
        }
    }
    return $out;
}

while ($request = $worker->waitRequest()) {
    $path = $request->getUri()->getPath();
    if ($path === '/api/pid') {
        $data = ['pid' => getmypid(), 'sapi' => PHP_SAPI];
    } elseif ($path === '/api/upload') {
        $data = ['form' => $request->getParsedBody(), 'files' => describe($request->getUploadedFiles())];
    } elseif ($path === '/api/gated') {
        $query = $request->getQueryParams();
        file_put_contents((string)$query['started'], 'started');
        for ($i = 0; $i < 2000 && !file_exists((string)$query['gate']); $i++) {
            usleep(10000);
            clearstatcache();
        }
        $data = ['form' => $request->getParsedBody(), 'files' => describe($request->getUploadedFiles())];
    } elseif ($path === '/api/crash') {
        exit(1);
    } else {
        $data = ['pid' => getmypid(), 'path' => $path];
    }
    $worker->respond($http->createResponse(200)
        ->withHeader('Content-Type', 'application/json')
        ->withBody($http->createStream(json_encode($data, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES))));
}
