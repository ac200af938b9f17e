<?php
// fephp's PHP worker library, from the worker's side: RoadRunner's worker protocol over STDIN/STDOUT, on PSR-7.
//
// A worker is a PHP CLI process that boots its app once, then serves one request after another:
//
//     require '/path/to/fephp/php/fephp-worker.php';
//     $worker = \Fephp\Worker\Worker::create();          // nyholm/psr7 from Debian's php-nyholm-psr7
//     while ($request = $worker->waitRequest()) {        // a Psr\Http\Message\ServerRequestInterface
//         try {
//             $worker->respond($app->handle($request));  // a Psr\Http\Message\ResponseInterface
//         } catch (\Throwable $e) {
//             $worker->error($e::class . ': ' . $e->getMessage());
//         }
//     }
//
// `new Worker($factory, $factory, $factory)` takes any PSR-17 factories instead (a Composer app's own).
// Written here from the protocol as fephp/roadrunner/_frames.py and _http.py describe it; no library code copied.
//
// The frame (goridge version 1), all integers little endian:
//   byte 0      version 1 in the high nibble, the header's length in 32-bit words (3 + options) in the low one
//   byte 1      flags: CONTROL 0x01, CODEC_JSON 0x08, ERROR 0x40, CODEC_PROTO 0x80 (refused: JSON only)
//   bytes 2-5   the payload's length
//   bytes 6-9   CRC-32 of bytes 0-5 (PHP's crc32(), zlib's): checked on every frame read, as the Go side does
//   byte 10     stream bits: STREAM 0x01 (more frames follow), STOP 0x02 (the front stops the stream), PONG 0x08
//   byte 11     0
//   then        the options (uint32 words), then the payload
//
// The conversation:
//   - the front sends a control frame {"pid":...}; the worker answers a control frame {"pid":<its pid>};
//   - a request is one frame: the payload is the request context (JSON) then the body, the context's length
//     in the one option; when the context says "parsed", the body is the form already parsed, as JSON;
//   - the response's first frame is {"status":N,"headers":{name:[values]}} then the body, the context's length
//     in the one option; a body over the chunk size, or an iterable body (respondStream), goes in several frames,
//     all but the last with STREAM, the later ones with option 0 (no context); a frame with the STOP bit from the
//     front in the middle of a stream is acknowledged by an empty frame without STREAM, and the stream ends there;
//   - a failed request is an ERROR frame, the message as the payload, no options; the worker stays usable;
//   - a control frame {"stop":true} ends the loop: waitRequest() returns null and the script exits 0.
//
// PHP's CLI writes echo and print to STDOUT, where they would break the frames: Worker::create() moves any such
// output to STDERR (and sets display_errors=stderr). header(), setcookie() and $_GET/$_POST/$_FILES do nothing in
// worker mode; everything goes through the PSR-7 request and response.

declare(strict_types=1);

namespace Fephp\Worker;

use Psr\Http\Message\ResponseInterface;
use Psr\Http\Message\ServerRequestFactoryInterface;
use Psr\Http\Message\ServerRequestInterface;
use Psr\Http\Message\StreamFactoryInterface;
use Psr\Http\Message\UploadedFileFactoryInterface;

/** The front and the worker disagree about the protocol: not recoverable, the worker should exit. */
final class ProtocolError extends \RuntimeException
{
}

/** Where the worker is; kept in one field. */
enum State
{
    /** Waiting in waitRequest(), or between requests. */
    case Idle;
    /** A request handed to the app, its response not sent. */
    case Busy;
    /** The front sent stop, or closed our stdin: no more requests. */
    case Stopped;
}

final class Worker
{
    public const CONTROL = 0x01;
    public const CODEC_JSON = 0x08;
    public const ERROR = 0x40;
    public const CODEC_PROTO = 0x80;
    public const STREAM = 0x01;
    public const STOP = 0x02;
    public const PONG = 0x08;

    /** A body up to this many bytes goes in one frame; a longer one in frames of this size. */
    public const DEFAULT_CHUNK_SIZE = 1 << 20;
    /** A frame the front announces longer than this is refused (fephp's own bound: fephp.roadrunner's 64 MiB). */
    public const DEFAULT_MAX_PAYLOAD = 64 << 20;
    /** Where Debian's php-nyholm-psr7 puts its autoloader, relative to the include_path (/usr/share/php). */
    public const NYHOLM_AUTOLOAD = 'Nyholm/Psr7/autoload.php';
    /** What the front may ask to stop with and what a worker asks to be retired with. */
    private const STOP_MESSAGE = '{"stop":true}';

    private State $state = State::Idle;

    /**
     * @param resource $in  the front's frames (STDIN)
     * @param resource $out our frames (STDOUT)
     */
    public function __construct(
        private ServerRequestFactoryInterface $requests,
        private StreamFactoryInterface $streams,
        private UploadedFileFactoryInterface $uploads,
        private $in = STDIN,
        private $out = STDOUT,
        private int $chunkSize = self::DEFAULT_CHUNK_SIZE,
        private int $maxPayload = self::DEFAULT_MAX_PAYLOAD,
    ) {
        if ($chunkSize < 1) {
            throw new \InvalidArgumentException("chunk size $chunkSize, expected at least 1 byte");
        }
    }

    /** A worker on nyholm/psr7 (Composer's if loaded, else Debian's), with stray output moved to STDERR. */
    public static function create(int $chunkSize = self::DEFAULT_CHUNK_SIZE): self
    {
        if (!class_exists(\Nyholm\Psr7\Factory\Psr17Factory::class)) {
            $autoload = stream_resolve_include_path(self::NYHOLM_AUTOLOAD);
            if ($autoload === false) {
                fwrite(STDERR, "fephp-worker: nyholm/psr7 not found (" . self::NYHOLM_AUTOLOAD . " is not on the"
                    . " include_path " . get_include_path() . "): apt-get install php-nyholm-psr7, or load"
                    . " Composer's autoloader first, or pass PSR-17 factories to new Worker(...)\n");
                exit(1);
            }
            require_once $autoload;
        }
        self::guardStdout();
        $factory = new \Nyholm\Psr7\Factory\Psr17Factory();
        return new self($factory, $factory, $factory, STDIN, STDOUT, $chunkSize);
    }

    /** echo, print and PHP's own messages would land among the frames: send them to STDERR instead. */
    public static function guardStdout(): void
    {
        ini_set('display_errors', 'stderr');
        // Chunk size 1: the callback runs at every output call, so nothing waits in the buffer.
        ob_start(static function (string $buffer): string {
            if ($buffer !== '') {
                fwrite(STDERR, $buffer);
            }
            return '';
        }, 1);
    }

    /**
     * The next request, or null when the front says stop or closes the pipe: the loop ends, the script exits 0.
     *
     * Answers the pid handshake on the way.
     */
    public function waitRequest(): ?ServerRequestInterface
    {
        if ($this->state === State::Busy) {
            throw new \LogicException('waitRequest() before the last request was answered (respond() or error())');
        }
        while ($this->state === State::Idle) {
            $frame = $this->readFrame();
            if ($frame === null) {
                $this->state = State::Stopped;
                break;
            }
            [$flags, $options, $stream, $payload] = $frame;
            if ($flags & self::CONTROL) {
                $this->control($payload);
                continue;
            }
            if ($stream !== 0) {
                continue; // a STOP or PONG for a stream that has already ended
            }
            if ($flags & self::CODEC_PROTO) {
                throw new ProtocolError('request context in protobuf (CODEC_PROTO): this library reads JSON');
            }
            if (count($options) !== 1 || $options[0] > strlen($payload)) {
                throw new ProtocolError('request frame without its context length as its one option');
            }
            $this->state = State::Busy;
            return $this->request(substr($payload, 0, $options[0]), substr($payload, $options[0]));
        }
        return null;
    }

    /**
     * Send the response: status, headers (several values of a name, as several Set-Cookie, stay apart), body.
     *
     * A body of known size up to the chunk size goes in one frame; a longer one, or one whose size is unknown,
     * in several. Returns false when the front stopped the stream before its end.
     */
    public function respond(ResponseInterface $response): bool
    {
        $body = $response->getBody();
        $size = $body->getSize();
        if ($size !== null && $size <= $this->chunkSize) {
            $this->expectBusy();
            $this->sendHead($response, (string)$body, false);
            $this->state = State::Idle;
            return true;
        }
        if ($body->isSeekable()) {
            $body->rewind();
        }
        $chunks = (function () use ($body): \Generator {
            while (!$body->eof()) {
                yield $body->read($this->chunkSize);
            }
        })();
        return $this->respondStream($response, $chunks);
    }

    /**
     * Send the response's status and headers, then each string of *chunks* in a frame of its own as it comes
     * (one over the chunk size in several).
     *
     * The response's own body is not sent. Returns false when the front stopped the stream (a frame with the
     * STOP bit: its client went away); the rest of *chunks* is then not read.
     *
     * @param iterable<string> $chunks
     */
    public function respondStream(ResponseInterface $response, iterable $chunks): bool
    {
        $this->expectBusy();
        $headSent = false;
        foreach ($chunks as $piece) {
            // A piece over the chunk size is cut: no frame exceeds it, whatever the app yields.
            foreach (strlen($piece) > $this->chunkSize ? str_split($piece, $this->chunkSize) : [$piece] as $chunk) {
                if ($chunk === '') {
                    continue;
                }
                if ($headSent && $this->stopRequested()) {
                    $this->writeFrame('', self::CODEC_JSON, [0], 0); // the acknowledgement: the stream ends here
                    $this->state = State::Idle;
                    return false;
                }
                if ($headSent) {
                    $this->writeFrame($chunk, self::CODEC_JSON, [0], self::STREAM);
                } else {
                    $this->sendHead($response, $chunk, true);
                    $headSent = true;
                }
            }
        }
        if ($headSent) {
            $this->writeFrame('', self::CODEC_JSON, [0], 0);
        } else {
            $this->sendHead($response, '', false);
        }
        $this->state = State::Idle;
        return true;
    }

    /** The request failed: an ERROR frame with *message*; the front answers its client 500 and logs it. */
    public function error(string $message): void
    {
        $this->expectBusy();
        $this->writeFrame($message, self::ERROR, [], 0);
        $this->state = State::Idle;
    }

    /** Instead of answering the request, ask the front to retire this worker (it gives the request to another). */
    public function retire(): void
    {
        $this->expectBusy();
        $this->writeFrame(self::STOP_MESSAGE, 0, [strlen(self::STOP_MESSAGE)], 0);
        $this->state = State::Stopped;
    }

    private function expectBusy(): void
    {
        if ($this->state !== State::Busy) {
            throw new \LogicException('no request to answer: call waitRequest() first');
        }
    }

    private function control(string $payload): void
    {
        $message = json_decode($payload, true);
        if (!is_array($message)) {
            throw new ProtocolError('control frame that is not a JSON object: ' . substr($payload, 0, 200));
        }
        if (!empty($message['stop'])) {
            $this->state = State::Stopped;
            return;
        }
        if (!empty($message['pid'])) {
            $pid = json_encode(['pid' => getmypid()], JSON_THROW_ON_ERROR);
            $this->writeFrame($pid, self::CONTROL | self::CODEC_JSON);
            return;
        }
        throw new ProtocolError('unknown control message ' . substr($payload, 0, 200));
    }

    /** In the middle of a stream: has the front sent a frame with the STOP bit? Reads only what is there. */
    private function stopRequested(): bool
    {
        $read = [$this->in];
        $none = null;
        while (stream_select($read, $none, $none, 0) > 0) {
            $frame = $this->readFrame();
            if ($frame === null) {
                return true; // the front is gone: nobody reads the rest
            }
            if ($frame[2] & self::STOP) {
                return true;
            }
            if (!($frame[2] & self::PONG)) {
                throw new ProtocolError('a frame other than STOP or PONG in the middle of a response');
            }
            $read = [$this->in];
        }
        return false;
    }

    private function sendHead(ResponseInterface $response, string $body, bool $more): void
    {
        $context = json_encode(
            ['status' => $response->getStatusCode(), 'headers' => (object)$response->getHeaders()],
            JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE,
        );
        $this->writeFrame($context . $body, self::CODEC_JSON, [strlen($context)], $more ? self::STREAM : 0);
    }

    private function request(string $contextJson, string $body): ServerRequestInterface
    {
        try {
            $context = json_decode($contextJson, true, 512, JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new ProtocolError('request context is not JSON: ' . $e->getMessage());
        }
        if (!is_array($context) || !is_string($context['method'] ?? null) || !is_string($context['uri'] ?? null)) {
            throw new ProtocolError('request context without a method and a uri');
        }
        $headers = is_array($context['headers'] ?? null) ? $context['headers'] : [];
        $rawQuery = (string)($context['rawQuery'] ?? '');
        $request = $this->requests->createServerRequest(
            $context['method'],
            $context['uri'],
            self::serverParams($context, $headers, $rawQuery),
        );
        $protocol = (string)($context['protocol'] ?? 'HTTP/1.1');
        if (str_starts_with($protocol, 'HTTP/')) {
            $request = $request->withProtocolVersion(substr($protocol, 5));
        }
        foreach ($headers as $name => $values) {
            $request = $request->withHeader((string)$name, array_map('strval', (array)$values));
        }
        parse_str($rawQuery, $query);
        $request = $request->withQueryParams($query)
            ->withCookieParams(is_array($context['cookies'] ?? null) ? $context['cookies'] : []);
        if (!empty($context['parsed'])) {
            // The front parsed the form (urlencoded or multipart) into a tree: the body is that tree as JSON,
            // and the raw body is not there to read, as php://input is empty for multipart under php-fpm.
            $request = $request->withParsedBody((array)json_decode($body !== '' ? $body : '{}', true));
        } else {
            $request = $request->withBody($this->streams->createStream($body));
            if ($context['method'] === 'POST' && self::isUrlencoded($request->getHeaderLine('Content-Type'))) {
                parse_str($body, $form); // what PHP itself does for $_POST
                $request = $request->withParsedBody($form);
            }
        }
        if (is_array($context['uploads'] ?? null)) {
            $request = $request->withUploadedFiles($this->uploadTree($context['uploads']));
        }
        foreach ((array)($context['attributes'] ?? []) as $name => $value) {
            $request = $request->withAttribute((string)$name, $value);
        }
        return $request;
    }

    private static function isUrlencoded(string $contentType): bool
    {
        return strtolower(trim(explode(';', $contentType, 2)[0])) === 'application/x-www-form-urlencoded';
    }

    /**
     * What $_SERVER holds under php-fpm for this request, built from the context alone: nothing of the worker's
     * own environment leaks in (its argv, its PATH, its secrets), as a CGI environment inherits nothing.
     *
     * @param array<string, mixed> $context
     * @param array<string, mixed> $headers
     * @return array<string, mixed>
     */
    private static function serverParams(array $context, array $headers, string $rawQuery): array
    {
        $uri = parse_url($context['uri']) ?: [];
        $https = ($uri['scheme'] ?? 'http') === 'https';
        $now = microtime(true);
        $path = $uri['path'] ?? '/';
        $server = [
            'REQUEST_TIME' => (int)$now,
            'REQUEST_TIME_FLOAT' => $now,
            'REMOTE_ADDR' => (string)($context['remoteAddr'] ?? ''),
            'REQUEST_METHOD' => $context['method'],
            'REQUEST_URI' => $rawQuery === '' ? $path : "$path?$rawQuery",
            'QUERY_STRING' => $rawQuery,
            'SERVER_PROTOCOL' => (string)($context['protocol'] ?? 'HTTP/1.1'),
            'SERVER_NAME' => $uri['host'] ?? '',
            'SERVER_PORT' => (string)($uri['port'] ?? ($https ? 443 : 80)),
        ];
        if ($https) {
            $server['HTTPS'] = 'on';
        }
        foreach ($headers as $name => $values) {
            $key = strtoupper(str_replace('-', '_', (string)$name));
            // RFC 3875 4.1.2/4.1.3: no HTTP_ prefix for these two.
            if ($key !== 'CONTENT_TYPE' && $key !== 'CONTENT_LENGTH') {
                $key = 'HTTP_' . $key;
            }
            $server[$key] = implode(', ', array_map('strval', (array)$values));
        }
        return $server;
    }

    /**
     * The context's `uploads` tree as PSR-7 UploadedFileInterface objects, nested as PHP nests $_FILES names.
     *
     * @param array<mixed> $tree
     * @return array<mixed>
     */
    private function uploadTree(array $tree): array
    {
        $out = [];
        foreach ($tree as $key => $node) {
            if (!is_array($node)) {
                throw new ProtocolError("upload $key is neither a file nor a tree of files");
            }
            $out[$key] = array_key_exists('tmpName', $node) && array_key_exists('error', $node)
                ? $this->uploadedFile($node)
                : $this->uploadTree($node);
        }
        return $out;
    }

    /** @param array<string, mixed> $file */
    private function uploadedFile(array $file): \Psr\Http\Message\UploadedFileInterface
    {
        $error = (int)$file['error'];
        $stream = $error === UPLOAD_ERR_OK
            ? $this->streams->createStreamFromFile((string)$file['tmpName'], 'r')
            : $this->streams->createStream('');
        return $this->uploads->createUploadedFile(
            $stream,
            isset($file['size']) ? (int)$file['size'] : null,
            $error,
            isset($file['name']) ? (string)$file['name'] : null,
            isset($file['mime']) ? (string)$file['mime'] : null,
        );
    }

    /**
     * One frame from the front, checked; null at EOF between frames.
     *
     * @return array{0: int, 1: list<int>, 2: int, 3: string}|null flags, options, stream bits, payload
     */
    private function readFrame(): ?array
    {
        $head = $this->readExactly(12, true);
        if ($head === null) {
            return null;
        }
        $h = unpack('Cfirst/Cflags/Vlength/Vcrc/Cstream/Cunused', $head);
        if ($h['first'] >> 4 !== 1) {
            throw new ProtocolError(sprintf('frame of version %d, expected 1', $h['first'] >> 4));
        }
        $words = ($h['first'] & 0x0F) - 3;
        if ($words < 0 || $words > 10) {
            throw new ProtocolError(sprintf('frame header of %d words, expected 3 to 13', $words + 3));
        }
        if (crc32(substr($head, 0, 6)) !== $h['crc']) {
            throw new ProtocolError('frame header CRC mismatch');
        }
        if ($h['length'] > $this->maxPayload) {
            throw new ProtocolError("frame payload of {$h['length']} bytes exceeds the bound of {$this->maxPayload}");
        }
        $options = $words > 0 ? array_values(unpack("V$words", $this->readExactly(4 * $words, false))) : [];
        $payload = $h['length'] > 0 ? $this->readExactly($h['length'], false) : '';
        return [$h['flags'], $options, $h['stream'], $payload];
    }

    private function readExactly(int $length, bool $eofAllowed): ?string
    {
        // stream_get_contents() loops over the pipe's short reads until $length bytes or EOF.
        $data = stream_get_contents($this->in, $length);
        if ($data === false) {
            throw new ProtocolError('reading the front\'s frames failed');
        }
        if (strlen($data) === $length) {
            return $data;
        }
        if ($data === '' && $eofAllowed) {
            return null;
        }
        throw new ProtocolError(sprintf('the front closed the pipe %d bytes into %d', strlen($data), $length));
    }

    /** @param list<int> $options */
    private function writeFrame(string $payload, int $flags, array $options = [], int $stream = 0): void
    {
        $first = pack('CCV', 1 << 4 | (3 + count($options)), $flags, strlen($payload));
        $frame = $first . pack('VCC', crc32($first), $stream, 0) . ($options ? pack('V*', ...$options) : '');
        $this->writeAll($frame . $payload);
    }

    private function writeAll(string $data): void
    {
        for ($done = 0, $total = strlen($data); $done < $total; $done += $written) {
            $written = fwrite($this->out, $done === 0 ? $data : substr($data, $done));
            if ($written === false || $written === 0) {
                throw new ProtocolError('writing to the front failed: it closed the pipe');
            }
        }
        fflush($this->out);
    }
}
