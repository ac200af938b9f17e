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
// Worker is PSR-7 over Connection, which is the protocol alone (a request as the context array and the body,
// a response as status, headers and pieces); php/fephp-symfony-runtime.php puts HttpFoundation over it instead.
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
//     front in the middle of a stream is acknowledged by an empty frame without STREAM, and the stream ends there
//     (fephp's client is then done with the request: nothing more is sent for it, not even an ERROR);
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
use Psr\Http\Message\UploadedFileInterface;

/** The front and the worker disagree about the protocol: not recoverable, the worker should exit. */
final class ProtocolError extends \RuntimeException
{
}

/** Where the worker's end of the conversation is; kept in one field. */
enum State
{
    /** Waiting for a request, or between requests. */
    case Idle;
    /** A request handed to the app, nothing of its response sent. */
    case Busy;
    /** begin() called: the head waits for the first piece of the body (or for end()). */
    case HeadPending;
    /** The head and some of the body sent, with STREAM. */
    case Streaming;
    /** The front stopped the stream and has its acknowledgement: the rest of the response is dropped. */
    case StreamStopped;
    /** The front sent stop or closed our stdin, or we asked to be retired: no more requests. */
    case Stopped;
}

/** One request as the front sent it: the context (decoded JSON) and the body. */
final class Incoming
{
    /** @param array<string, mixed> $context */
    public function __construct(public readonly array $context, public readonly string $body)
    {
    }

    public function method(): string
    {
        return $this->context['method'];
    }

    public function uri(): string
    {
        return $this->context['uri'];
    }

    public function rawQuery(): string
    {
        return (string)($this->context['rawQuery'] ?? '');
    }

    /** @return array<string, list<string>> */
    public function headers(): array
    {
        $headers = [];
        foreach (is_array($this->context['headers'] ?? null) ? $this->context['headers'] : [] as $name => $values) {
            $headers[(string)$name] = array_map('strval', array_values((array)$values));
        }
        return $headers;
    }

    /** @return array<string, string> */
    public function cookies(): array
    {
        return is_array($this->context['cookies'] ?? null) ? $this->context['cookies'] : [];
    }

    /** @return array<string, mixed> */
    public function attributes(): array
    {
        return is_array($this->context['attributes'] ?? null) ? $this->context['attributes'] : [];
    }

    /** @return array<string, mixed> the query string parsed as PHP parses $_GET */
    public function query(): array
    {
        parse_str($this->rawQuery(), $query);
        return $query;
    }

    /** The front parsed the form (urlencoded or multipart): the body is that tree as JSON. */
    public function parsed(): bool
    {
        return !empty($this->context['parsed']);
    }

    /**
     * The form as $_POST would hold it, or null: the front's parsed tree, else a urlencoded POST body parsed here.
     *
     * @return array<string, mixed>|null
     */
    public function form(): ?array
    {
        if ($this->parsed()) {
            return (array)json_decode($this->body !== '' ? $this->body : '{}', true);
        }
        $type = strtolower(trim(explode(';', implode(', ', $this->headers()['Content-Type'] ?? []), 2)[0]));
        if ($this->method() === 'POST' && $type === 'application/x-www-form-urlencoded') {
            parse_str($this->body, $form); // what PHP itself does for $_POST
            return $form;
        }
        return null;
    }

    /**
     * The uploads tree: at each leaf the file's name, mime, size, error (UPLOAD_ERR_*) and tmpName.
     *
     * @return array<mixed>
     */
    public function uploads(): array
    {
        return is_array($this->context['uploads'] ?? null) ? $this->context['uploads'] : [];
    }

    /** @param mixed $node */
    public static function isFile($node): bool
    {
        return is_array($node) && array_key_exists('tmpName', $node) && array_key_exists('error', $node);
    }

    /**
     * What $_SERVER holds under php-fpm for this request, built from the context alone: nothing of the worker's
     * own environment leaks in (its argv, its PATH, its secrets), as a CGI environment inherits nothing.
     *
     * @return array<string, mixed>
     */
    public function serverParams(): array
    {
        $uri = parse_url($this->uri()) ?: [];
        $https = ($uri['scheme'] ?? 'http') === 'https';
        $now = microtime(true);
        $path = $uri['path'] ?? '/';
        $rawQuery = $this->rawQuery();
        $server = [
            'REQUEST_TIME' => (int)$now,
            'REQUEST_TIME_FLOAT' => $now,
            'REMOTE_ADDR' => (string)($this->context['remoteAddr'] ?? ''),
            'REQUEST_METHOD' => $this->method(),
            'REQUEST_URI' => $rawQuery === '' ? $path : "$path?$rawQuery",
            'QUERY_STRING' => $rawQuery,
            'SERVER_PROTOCOL' => (string)($this->context['protocol'] ?? 'HTTP/1.1'),
            'SERVER_NAME' => $uri['host'] ?? '',
            'SERVER_PORT' => (string)($uri['port'] ?? ($https ? 443 : 80)),
        ];
        if ($https) {
            $server['HTTPS'] = 'on';
        }
        foreach ($this->headers() as $name => $values) {
            $key = strtoupper(str_replace('-', '_', $name));
            // RFC 3875 4.1.2/4.1.3: no HTTP_ prefix for these two.
            if ($key !== 'CONTENT_TYPE' && $key !== 'CONTENT_LENGTH') {
                $key = 'HTTP_' . $key;
            }
            $server[$key] = implode(', ', $values);
        }
        // Go keeps Host out of the header map (RoadRunner's contexts have none): the URI's authority says it.
        if (!isset($server['HTTP_HOST']) && isset($uri['host'])) {
            $server['HTTP_HOST'] = $uri['host'] . (isset($uri['port']) ? ":{$uri['port']}" : '');
        }
        return $server;
    }
}

/**
 * The worker's end of the pipes, no HTTP library: requests in as Incoming, responses out as status, headers, body.
 *
 * The states (State) and what moves between them:
 *
 *     Idle --waitRequest()--> Busy --respond(), error()--> Idle
 *     Busy --begin()--> HeadPending --write()--> Streaming --end()--> Idle
 *     Streaming --STOP from the front, seen by write()--> StreamStopped --end()--> Idle
 *     Idle --stop frame or EOF--> Stopped;  Busy --retire()--> Stopped
 */
final class Connection
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
    /** What the front may ask to stop with and what a worker asks to be retired with. */
    private const STOP_MESSAGE = '{"stop":true}';

    private State $state = State::Idle;
    private int $status = 0;
    /** @var array<string, list<string>> */
    private array $headers = [];

    /**
     * @param resource $in  the front's frames (STDIN)
     * @param resource $out our frames (STDOUT)
     */
    public function __construct(
        private $in = STDIN,
        private $out = STDOUT,
        private int $chunkSize = self::DEFAULT_CHUNK_SIZE,
        private int $maxPayload = self::DEFAULT_MAX_PAYLOAD,
    ) {
        if ($chunkSize < 1) {
            throw new \InvalidArgumentException("chunk size $chunkSize, expected at least 1 byte");
        }
    }

    public function state(): State
    {
        return $this->state;
    }

    /** The next request, or null when the front says stop or closes the pipe. Answers the pid handshake. */
    public function waitRequest(): ?Incoming
    {
        if ($this->state !== State::Idle && $this->state !== State::Stopped) {
            throw new \LogicException('waitRequest() before the last request was answered (respond(), end(), error())');
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
            try {
                $context = json_decode(substr($payload, 0, $options[0]), true, 512, JSON_THROW_ON_ERROR);
            } catch (\JsonException $e) {
                throw new ProtocolError('request context is not JSON: ' . $e->getMessage());
            }
            if (!is_array($context) || !is_string($context['method'] ?? null) || !is_string($context['uri'] ?? null)) {
                throw new ProtocolError('request context without a method and a uri');
            }
            $this->state = State::Busy;
            return new Incoming($context, substr($payload, $options[0]));
        }
        return null;
    }

    /**
     * The whole response: one frame up to the chunk size, several past it.
     *
     * @param array<string, list<string>> $headers several values of a name (Set-Cookie) stay apart
     */
    public function respond(int $status, array $headers, string $body): void
    {
        $this->expect(State::Busy);
        if (strlen($body) <= $this->chunkSize) {
            $this->sendHead($status, $headers, $body, false);
            $this->state = State::Idle;
            return;
        }
        $this->begin($status, $headers);
        $this->write($body);
        $this->end();
    }

    /**
     * Start a response whose body comes in pieces (write()), ended by end(). The head leaves with the first piece.
     *
     * @param array<string, list<string>> $headers
     */
    public function begin(int $status, array $headers): void
    {
        $this->expect(State::Busy);
        [$this->status, $this->headers, $this->state] = [$status, $headers, State::HeadPending];
    }

    /**
     * Send a piece of the body now, in frames of at most the chunk size. False once the front has stopped the
     * stream (its client went away): the piece and any later one are dropped, the app may stop making them.
     */
    public function write(string $data): bool
    {
        if ($this->state === State::StreamStopped) {
            return false;
        }
        $this->expect(State::HeadPending, State::Streaming);
        foreach (strlen($data) > $this->chunkSize ? str_split($data, $this->chunkSize) : [$data] as $chunk) {
            if ($chunk === '') {
                continue;
            }
            if ($this->state === State::HeadPending) {
                $this->sendHead($this->status, $this->headers, $chunk, true);
                $this->state = State::Streaming;
            } elseif ($this->stopRequested()) {
                $this->writeFrame('', self::CODEC_JSON, [0], 0); // the acknowledgement: the stream ends here
                $this->state = State::StreamStopped;
                return false;
            } else {
                $this->writeFrame($chunk, self::CODEC_JSON, [0], self::STREAM);
            }
        }
        return true;
    }

    /** End the response begun with begin(). False when the front had stopped it. */
    public function end(): bool
    {
        $this->expect(State::HeadPending, State::Streaming, State::StreamStopped);
        $complete = $this->state !== State::StreamStopped;
        if ($this->state === State::HeadPending) {
            $this->sendHead($this->status, $this->headers, '', false);
        } elseif ($this->state === State::Streaming) {
            $this->writeFrame('', self::CODEC_JSON, [0], 0);
        }
        [$this->headers, $this->state] = [[], State::Idle];
        return $complete;
    }

    /** The request failed: an ERROR frame with *message*; the front answers its client 500 and logs it. */
    public function error(string $message): void
    {
        $this->expect(State::Busy, State::HeadPending, State::Streaming, State::StreamStopped);
        if ($this->state !== State::StreamStopped) { // the front is done with a stopped stream: nothing more
            $this->writeFrame($message, self::ERROR, [], 0);
        }
        [$this->headers, $this->state] = [[], State::Idle];
    }

    /** Instead of answering the request, ask the front to retire this worker (it gives the request to another). */
    public function retire(): void
    {
        $this->expect(State::Busy);
        $this->writeFrame(self::STOP_MESSAGE, 0, [strlen(self::STOP_MESSAGE)], 0);
        $this->state = State::Stopped;
    }

    private function expect(State ...$states): void
    {
        if (!in_array($this->state, $states, true)) {
            throw new \LogicException("not allowed while the connection is {$this->state->name}");
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

    /** @param array<string, list<string>> $headers */
    private function sendHead(int $status, array $headers, string $body, bool $more): void
    {
        $context = json_encode(
            ['status' => $status, 'headers' => (object)$headers],
            JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE,
        );
        $this->writeFrame($context . $body, self::CODEC_JSON, [strlen($context)], $more ? self::STREAM : 0);
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

/** echo, print and PHP's own messages would land among the frames: send them to STDERR instead. */
function guard_stdout(): void
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

/** The PSR-7 worker: waitRequest() gives a ServerRequestInterface, respond() takes a ResponseInterface. */
final class Worker
{
    /** Where Debian's php-nyholm-psr7 puts its autoloader, relative to the include_path (/usr/share/php). */
    public const NYHOLM_AUTOLOAD = 'Nyholm/Psr7/autoload.php';

    public readonly Connection $connection;

    /**
     * @param resource $in  the front's frames (STDIN)
     * @param resource $out our frames (STDOUT)
     */
    public function __construct(
        private ServerRequestFactoryInterface $requests,
        private StreamFactoryInterface $streams,
        private UploadedFileFactoryInterface $uploads,
        $in = STDIN,
        $out = STDOUT,
        private int $chunkSize = Connection::DEFAULT_CHUNK_SIZE,
        int $maxPayload = Connection::DEFAULT_MAX_PAYLOAD,
    ) {
        $this->connection = new Connection($in, $out, $chunkSize, $maxPayload);
    }

    /** A worker on nyholm/psr7 (Composer's if loaded, else Debian's), with stray output moved to STDERR. */
    public static function create(int $chunkSize = Connection::DEFAULT_CHUNK_SIZE): self
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
        guard_stdout();
        $factory = new \Nyholm\Psr7\Factory\Psr17Factory();
        return new self($factory, $factory, $factory, STDIN, STDOUT, $chunkSize);
    }

    /** The next request, or null when the front says stop or closes the pipe: the loop ends, the script exits 0. */
    public function waitRequest(): ?ServerRequestInterface
    {
        $incoming = $this->connection->waitRequest();
        return $incoming === null ? null : $this->request($incoming);
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
            $this->connection->respond($response->getStatusCode(), $response->getHeaders(), (string)$body);
            return true;
        }
        if ($body->isSeekable()) {
            $body->rewind();
        }
        $this->connection->begin($response->getStatusCode(), $response->getHeaders());
        while (!$body->eof() && $this->connection->write($body->read($this->chunkSize))) {
        }
        return $this->connection->end();
    }

    /**
     * Send the response's status and headers, then each string of *chunks* as it comes (one over the chunk size
     * in several frames).
     *
     * The response's own body is not sent. Returns false when the front stopped the stream (a frame with the
     * STOP bit: its client went away); the rest of *chunks* is then not read.
     *
     * @param iterable<string> $chunks
     */
    public function respondStream(ResponseInterface $response, iterable $chunks): bool
    {
        $this->connection->begin($response->getStatusCode(), $response->getHeaders());
        foreach ($chunks as $chunk) {
            if (!$this->connection->write($chunk)) {
                break;
            }
        }
        return $this->connection->end();
    }

    /** The request failed: an ERROR frame with *message*; the front answers its client 500 and logs it. */
    public function error(string $message): void
    {
        $this->connection->error($message);
    }

    /** Instead of answering the request, ask the front to retire this worker (it gives the request to another). */
    public function retire(): void
    {
        $this->connection->retire();
    }

    private function request(Incoming $incoming): ServerRequestInterface
    {
        $request = $this->requests->createServerRequest(
            $incoming->method(),
            $incoming->uri(),
            $incoming->serverParams(),
        );
        $protocol = (string)($incoming->context['protocol'] ?? 'HTTP/1.1');
        if (str_starts_with($protocol, 'HTTP/')) {
            $request = $request->withProtocolVersion(substr($protocol, 5));
        }
        foreach ($incoming->headers() as $name => $values) {
            $request = $request->withHeader($name, $values);
        }
        $request = $request->withQueryParams($incoming->query())->withCookieParams($incoming->cookies());
        if (!$incoming->parsed()) {
            // With "parsed", the raw body is not there to read, as php://input is empty for multipart under php-fpm.
            $request = $request->withBody($this->streams->createStream($incoming->body));
        }
        $form = $incoming->form();
        if ($form !== null) {
            $request = $request->withParsedBody($form);
        }
        if ($incoming->uploads()) {
            $request = $request->withUploadedFiles($this->uploadTree($incoming->uploads()));
        }
        foreach ($incoming->attributes() as $name => $value) {
            $request = $request->withAttribute((string)$name, $value);
        }
        return $request;
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
            $out[$key] = Incoming::isFile($node) ? $this->uploadedFile($node) : $this->uploadTree($node);
        }
        return $out;
    }

    /** @param array<string, mixed> $file */
    private function uploadedFile(array $file): UploadedFileInterface
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
}
